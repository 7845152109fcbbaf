"""Invoice PDFs: one per finalized invoice, from a Jinja2 template via WeasyPrint.

The template (``invoicing/templates/invoice.html`` and ``invoice.css``) only lays
out text; every amount is formatted here through ``invoicing.money``. The file is
``<out_dir>/<number>.pdf``, written atomically; ``invoicing.ledger.record_pdf_path``
stores its path in the ledger.

What the PDF shows: the seller (``Seller``, configurable, e.g. from the catalog's
``organization`` with ``Seller.from_organization``), the buyer, number, issue and due
dates, billing period, payment status; one line per fee with units, unit price and
amount, and under a tiered fee its tier breakdown (``details["tiers"]``); then the
subtotal, each coupon, the subtotal excluding tax, each tax rate with its base, the
total including tax, each credit-note credit, the prepaid credits and the amount
due — in the invoice's currency with its symbol and ISO 4217 decimals.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

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
    payment_instructions: str | None = None  # e.g. bank details, printed in the footer

    @classmethod
    def from_organization(cls, organization: Mapping[str, Any]) -> Seller:
        """A seller from Lago's organization fields (``name``, ``legal_name``,
        ``address_line1``, ``address_line2``, ``zipcode``, ``city``, ``state``,
        ``country``, ``email``, ``tax_identification_number``) or ``address_lines``;
        missing fields fall back to the defaults."""
        default = cls()
        lines = organization.get("address_lines")
        if lines is None and any(organization.get(k) for k in ("address_line1", "city", "country")):
            city = " ".join(str(organization[k]) for k in ("zipcode", "city") if organization.get(k))
            lines = [organization.get(k) for k in ("address_line1", "address_line2")] + [
                city, organization.get("state"), organization.get("country")
            ]
        return cls(
            name=organization.get("legal_name") or organization.get("name") or default.name,
            address_lines=tuple(str(line) for line in lines if line) if lines is not None else default.address_lines,
            email=organization.get("email", default.email),
            tax_id=organization.get("tax_identification_number") or organization.get("tax_id"),
            legal_notice=organization.get("legal_notice"),
            payment_instructions=organization.get("payment_instructions"),
        )


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
            "tiers": _tiers(fee.details, currency),
        }
        for fee in invoice.fees
    ]
    money = lambda cents: format_minor_units(cents, currency)  # noqa: E731
    totals: list[dict[str, Any]] = [{"label": "Subtotal", "amount": money(invoice.sub_total_cents)}]
    for coupon in invoice.applied_coupons:
        totals.append({"label": f"Coupon: {coupon.coupon_name}", "amount": money(-coupon.amount_cents)})
    if invoice.applied_coupons or invoice.applied_taxes:
        totals.append({"label": "Subtotal excl. tax", "amount": money(invoice.sub_total_after_coupons_cents),
                       "rule": True})
    for tax in invoice.applied_taxes:
        totals.append({
            "label": f"{tax.tax_name} ({_percent(tax.tax_rate)} of {money(tax.taxable_base_cents)})",
            "amount": money(tax.amount_cents),
        })
    if invoice.applied_taxes:
        totals.append({"label": "Total incl. tax", "amount": money(invoice.total_before_credits_cents), "rule": True})
    for credit in invoice.credit_note_credits:
        totals.append({"label": f"Credit note {credit.credit_note_number}", "amount": money(-credit.amount_cents)})
    if invoice.prepaid_credits_cents:
        totals.append({
            "label": f"Prepaid credits ({_units(invoice.prepaid_credits)} credits)",
            "amount": money(-invoice.prepaid_credits_cents),
        })
    return _environment.get_template("invoice.html").render(
        seller=seller,
        invoice=invoice,
        title="Invoice" if invoice.invoice_type == "subscription" else "Invoice (one-off)",
        issuing_date=_date(invoice.issuing_date),
        due_date=_date(invoice.due_date) if invoice.due_date else None,
        period=invoice_period if invoice.invoice_type == "subscription" else None,
        lines=lines,
        totals=totals,
        total=money(invoice.total_cents),
        status=invoice.status.capitalize(),
        payment_status=_PAYMENT_STATUS.get(invoice.payment_status, invoice.payment_status.capitalize()),
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


_PAYMENT_STATUS = {"pending": "Awaiting payment", "succeeded": "Paid", "failed": "Payment failed"}


def _fee_detail(fee: FinalizedFee, invoice_period: str) -> str:
    if fee.kind == "add_on":
        return f"One-off · {fee.add_on_code}"
    parts = [f"{fee.plan_code} · {fee.external_subscription_id}"]
    details = fee.details or {}
    if isinstance(details.get("filter"), dict) and details["filter"]:
        parts.append(", ".join(f"{k}: {'/'.join(map(str, v))}" for k, v in details["filter"].items()))
    if isinstance(details.get("group"), dict) and details["group"]:
        parts.append(", ".join(f"{k}: {v}" for k, v in details["group"].items()))
    if fee.kind == "commitment" and "minimum_commitment_cents" in details:
        parts.append("brings the period's fees up to the plan's minimum commitment")
    fee_period = _period(fee.period_start, fee.period_end)
    if fee_period != invoice_period:
        parts.append(fee_period)
    return " · ".join(parts)


def _tiers(details: Mapping[str, Any] | None, currency: str) -> list[dict[str, str]]:
    """The graduated breakdown: one row per tier reached (rating ``details["tiers"]``)."""
    rows = []
    for index, tier in enumerate((details or {}).get("tiers") or (), start=1):
        try:
            low = _dec(tier.get("from_value"))
            high = None if tier.get("to_value") in (None, "") else _dec(tier["to_value"])
            units = _dec(tier.get("units"))
            flat = _dec(tier.get("flat_amount") or 0)
            amount = _dec(tier.get("amount"))
        except (InvalidOperation, TypeError, ValueError):
            continue  # a malformed tier is not printed rather than printed wrong
        if units == 0 and amount == 0:
            continue  # a tier not reached
        span = f"{_units(low)} – {_units(high)}" if high is not None else f"{_units(low)} and above"
        if tier.get("rate") not in (None, ""):
            price = f"{_percent(_dec(tier['rate']))}"
        elif tier.get("per_unit_amount") not in (None, ""):
            price = format_amount(_dec(tier["per_unit_amount"]), currency)
        else:
            price = ""
        rows.append({
            "description": f"Tier {index}: {span}" + (f" · flat {format_amount(flat, currency)}" if flat else ""),
            "units": _units(units),
            "unit_price": price,
            "amount": format_amount(amount, currency),
        })
    return rows


def _dec(value: Any) -> Decimal:
    if isinstance(value, float):
        value = repr(value)
    return Decimal(str(value))


def _percent(rate: Decimal) -> str:
    return f"{rate.normalize():f} %"


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
