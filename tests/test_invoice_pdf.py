"""Money formatting and invoice PDFs (no database: invoices are built in memory)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import pytest

from invoicing.errors import UnknownCurrencyError
from invoicing.ledger import FinalizedFee, FinalizedInvoice
from invoicing.money import currency_exponent, format_amount, format_minor_units
from invoicing.pdf import Seller, render_invoice_html, render_invoice_pdf


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (123456, "EUR", "€1,234.56"),
        (0, "EUR", "€0.00"),
        (5, "USD", "$0.05"),
        (-1999, "USD", "-$19.99"),
        (100, "GBP", "£1.00"),
        (123456789012345, "EUR", "€1,234,567,890,123.45"),
        (1500, "JPY", "¥1,500"),
        (0, "JPY", "¥0"),
        (1234, "KWD", "1.234 KWD"),
        (5, "KWD", "0.005 KWD"),
        (1234567, "CHF", "12,345.67 CHF"),
    ],
)
def test_format_minor_units(cents: int, currency: str, text: str) -> None:
    assert format_minor_units(cents, currency) == text


def test_currency_exponents_follow_iso_4217() -> None:
    assert [currency_exponent(c) for c in ("EUR", "USD", "JPY", "KWD", "CLF")] == [2, 2, 0, 3, 4]
    with pytest.raises(UnknownCurrencyError):
        currency_exponent("XYZ")
    with pytest.raises(UnknownCurrencyError):
        format_minor_units(1, "eur")


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        format_minor_units(12.5, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_amount(0.1, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (Decimal("0.0025"), "EUR", "€0.0025"),
        (Decimal("12.5"), "EUR", "€12.50"),
        (Decimal("1E+3"), "USD", "$1,000.00"),
        (Decimal("3"), "JPY", "¥3"),
        (Decimal("0.5"), "JPY", "¥0.5"),
    ],
)
def test_format_amount_never_rounds_unit_prices(amount: Decimal, currency: str, text: str) -> None:
    assert format_amount(amount, currency) == text


def make_invoice(currency: str = "EUR", exponent: int = 2) -> FinalizedInvoice:
    start, end = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC)
    fees = (
        FinalizedFee(
            fee_key="sub-1/subscription/2025-03",
            kind="subscription",
            external_subscription_id="sub-1",
            plan_code="startup",
            billable_metric_code=None,
            charge_model=None,
            invoice_display_name="Startup plan",
            period_start=start,
            period_end=end,
            units=Decimal("1"),
            unit_amount=Decimal("49"),
            precise_amount=Decimal("49"),
            amount_cents=4900,
        ),
        FinalizedFee(
            fee_key="sub-1/api_calls/2025-03",
            kind="charge",
            external_subscription_id="sub-1",
            plan_code="startup",
            billable_metric_code="api_calls",
            charge_model="standard",
            invoice_display_name="API calls <beta>",
            period_start=start,
            period_end=end,
            units=Decimal("1234567"),
            unit_amount=Decimal("0.001"),
            precise_amount=Decimal("1234.567"),
            amount_cents=123457,
        ),
    )
    return FinalizedInvoice(
        id=uuid4(),
        number="BH-000042",
        sequential_id=42,
        billing_entity="default",
        invoice_key="cust-1/EUR/2025-04-01",
        external_customer_id="cust-1",
        customer_name="Globex Corporation",
        currency=currency,
        currency_exponent=exponent,
        issuing_date=date(2025, 4, 1),
        period_start=start,
        period_end=end,
        status="finalized",
        payment_status="pending",
        sub_total_cents=128357,
        total_cents=128357,
        finalized_at=datetime(2025, 4, 1, 0, 5, tzinfo=UTC),
        pdf_path=None,
        fees=fees,
    )


def pdf_text(path: Path, invoice: FinalizedInvoice, seller: Seller) -> str:
    """The PDF's text via pypdf or pdftotext, else the text WeasyPrint laid out."""
    try:
        import pypdf
    except ImportError:
        pass
    else:
        pages = pypdf.PdfReader(path).pages
        return " ".join(" ".join(page.extract_text() for page in pages).split())
    if shutil.which("pdftotext"):
        text = subprocess.run(
            ["pdftotext", str(path), "-"], check=True, capture_output=True, text=True
        ).stdout
        return " ".join(text.split())
    import weasyprint

    document = weasyprint.HTML(string=render_invoice_html(invoice, seller)).render()
    texts: list[str] = []

    def walk(box: object) -> None:
        text = getattr(box, "text", None)
        if isinstance(text, str):
            texts.append(text)
        for child in getattr(box, "children", ()):
            walk(child)

    for page in document.pages:
        walk(page._page_box)
    return " ".join(" ".join(texts).split())


def test_invoice_pdf(tmp_path: Path) -> None:
    invoice, seller = make_invoice(), Seller()
    path = render_invoice_pdf(invoice, seller, tmp_path / "invoices")
    assert path == tmp_path / "invoices" / "BH-000042.pdf"
    assert path.read_bytes().startswith(b"%PDF")
    assert [p.name for p in path.parent.iterdir()] == ["BH-000042.pdf"]  # no temp file left
    text = pdf_text(path, invoice, seller)
    for expected in (
        "BH-000042",
        "€1,283.57",  # total
        "€1,234.57",  # rounded fee
        "€0.001",  # exact unit price
        "1,234,567",  # units
        "Acme Cloud SAS",
        "Globex Corporation",
        "cust-1",
        "1 March 2025 – 31 March 2025",
        "1 April 2025",
    ):
        assert expected in text, expected


def test_invoice_html_escapes_and_formats_currency() -> None:
    html = render_invoice_html(make_invoice("JPY", 0), Seller(name="Tokyo KK", address_lines=()))
    assert "API calls &lt;beta&gt;" in html
    assert "¥128,357" in html and "Tokyo KK" in html
