"""Invoice PDFs: one per finalized invoice, from a Jinja2 template via WeasyPrint.

The template (``invoicing/templates/invoice.html`` and ``invoice.css``) only lays
out text; every amount is formatted here through ``invoicing.money``. The file is
``<out_dir>/<number>.pdf``, written atomically; ``invoicing.ledger.record_pdf_path``
stores its path in the ledger.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import jinja2

from invoicing.ledger import FinalizedFee, FinalizedInvoice
from invoicing.money import format_amount, format_minor_units

__all__ = ["Seller", "render_invoice_html", "render_invoice_pdf"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Seller:
    """Who issues the invoice, as printed in its header and footer."""

    name: str = "Acme Cloud SAS"
    address_lines: tuple[str, ...] = ("12 rue de la Paix", "75002 Paris", "France")
    email: str | None = "billing@acme-cloud.example"
    tax_id: str | None = None  # VAT or other tax registration number
    legal_notice: str | None = None  # e.g. share capital and company registration


def render_invoice_html(invoice: FinalizedInvoice, seller: Seller) -> str:
    """The invoice as HTML, ready for WeasyPrint (stylesheet resolved from templates)."""
    currency = invoice.currency
    invoice_period = _period(invoice.period_start, invoice.period_end)
    lines = [
        {
            "description": fee.invoice_display_name,
            "detail": _fee_detail(fee, invoice_period),
            "units": _units(fee.units),
            "unit_price": format_amount(fee.unit_amount, currency),
            "amount": format_minor_units(fee.amount_cents, currency),
        }
        for fee in invoice.fees
    ]
    return _environment.get_template("invoice.html").render(
        seller=seller,
        invoice=invoice,
        issuing_date=_date(invoice.issuing_date),
        period=invoice_period,
        lines=lines,
        sub_total=format_minor_units(invoice.sub_total_cents, currency),
        total=format_minor_units(invoice.total_cents, currency),
        status=invoice.status.capitalize(),
    )


def render_invoice_pdf(invoice: FinalizedInvoice, seller: Seller, out_dir: Path) -> Path:
    """Write ``<out_dir>/<number>.pdf`` (replacing any previous render); return its path."""
    import weasyprint  # heavy import: only when rendering

    if not invoice.number or os.sep in invoice.number or invoice.number.startswith("."):
        raise ValueError(f"invoice number {invoice.number!r} is not a file name")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{invoice.number}.pdf"
    html = weasyprint.HTML(string=render_invoice_html(invoice, seller), base_url=str(TEMPLATES_DIR))
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=f".{invoice.number}.", suffix=".pdf")
    try:
        with os.fdopen(fd, "wb") as tmp:
            html.write_pdf(tmp)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def _fee_detail(fee: FinalizedFee, invoice_period: str) -> str:
    parts = [f"{fee.plan_code} · {fee.external_subscription_id}"]
    fee_period = _period(fee.period_start, fee.period_end)
    if fee_period != invoice_period:
        parts.append(fee_period)
    return " · ".join(parts)


def _units(units: Decimal) -> str:
    return f"{units.normalize():,f}"


def _date(value: date) -> str:
    return f"{value.day} {value:%B %Y}"


def _period(start: datetime, end: datetime) -> str:
    """A [start, end) period: whole UTC days print as inclusive dates, else instants."""
    if start.timetz().replace(tzinfo=None) == time(0) and end.timetz().replace(tzinfo=None) == time(0):
        last_day = (end - timedelta(days=1)).date()
        if last_day <= start.date():
            return _date(start.date())
        return f"{_date(start.date())} – {_date(last_day)}"
    return f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC"
