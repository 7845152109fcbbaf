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


# -- a complete invoice: tiers, coupons, taxes per rate, credits, due date, payment ------

import os  # noqa: E402
from dataclasses import replace  # noqa: E402

from invoicing.ledger import AppliedCouponLine, AppliedTaxLine, CreditNoteCreditLine  # noqa: E402

EXAMPLE_PNG_ENV = "BILLHOUSE_WRITE_EXAMPLE_PNG"  # set to a path to (re)write docs/invoice-example.png

TIERS = [  # as the rating engine's details carry them: strings of exact decimals, major units
    {"from_value": "0", "to_value": "100", "units": "100", "per_unit_amount": "0", "rate": None,
     "flat_amount": "0", "amount": "0"},
    {"from_value": "101", "to_value": "1000", "units": "900", "per_unit_amount": "0.02", "rate": None,
     "flat_amount": "5", "amount": "23"},
    {"from_value": "1001", "to_value": None, "units": "234", "per_unit_amount": "0.01", "rate": None,
     "flat_amount": "0", "amount": "2.34"},
    {"from_value": "5001", "to_value": None, "units": "0", "per_unit_amount": "0.005", "rate": None,
     "flat_amount": "0", "amount": "0"},  # not reached: not printed
]


def make_full_invoice(currency: str = "EUR", exponent: int = 2) -> FinalizedInvoice:
    """Hand-computed: 4900 + 2534 (graduated: 0 + 23 + 2.34) = 7434; coupon 1000 pro rata
    (659.13 / 340.87) -> 6434; VAT 20 % on 4240.87 = 848.17, VAT 10 % on 2193.13 = 219.31
    -> 1067.49 -> 1067; 7501 incl. tax; credit note -1500; 12.5 credits x €1 = -1250;
    amount due 4751."""
    base = make_invoice(currency, exponent)
    plan, api = base.fees
    graduated = replace(api, invoice_display_name="API calls", charge_model="graduated", units=Decimal(1234),
                        unit_amount=Decimal("0.02053485"), precise_amount=Decimal("25.34"), amount_cents=2534,
                        details={"tiers": TIERS})
    return replace(
        base, fees=(plan, graduated), sub_total_cents=7434, coupons_cents=1000, taxes_cents=1067,
        credit_notes_cents=1500, prepaid_credits_cents=1250, prepaid_credits=Decimal("12.5"), total_cents=4751,
        due_date=date(2025, 5, 1), payment_status="succeeded",
        applied_coupons=(AppliedCouponLine("welcome", "Welcome offer", 1000),),
        applied_taxes=(AppliedTaxLine("vat_20", "VAT", Decimal(20), 4241, 848),
                       AppliedTaxLine("vat_10", "Reduced VAT", Decimal(10), 2193, 219)),
        credit_note_credits=(CreditNoteCreditLine("BH-000041-CN001", 1500),),
    )


ORGANIZATION = {  # Lago's organization fields, as a catalog's `organization:` section holds them
    "name": "Acme", "legal_name": "Acme Cloud SAS", "address_line1": "12 rue de la Paix", "zipcode": "75002",
    "city": "Paris", "country": "France", "email": "billing@acme.example",
    "tax_identification_number": "FR12345678901", "payment_instructions": "IBAN FR76 3000 6000 0112 3456 7890 189",
}


def test_complete_invoice_pdf_shows_every_part(tmp_path: Path) -> None:
    invoice = make_full_invoice()
    # the average unit price printed times the quantity gives the amount (25.34 / 1234)
    graduated = invoice.fees[1]
    assert (graduated.unit_amount * graduated.units).quantize(Decimal("0.01")) == graduated.precise_amount
    seller = Seller.from_organization(ORGANIZATION)
    assert seller.address_lines == ("12 rue de la Paix", "75002 Paris", "France")
    path = render_invoice_pdf(invoice, seller, tmp_path)
    text = pdf_text(path, invoice, seller)
    for expected in (
        "Acme Cloud SAS", "75002 Paris", "FR12345678901", "IBAN FR76",  # seller
        "Globex Corporation", "cust-1",  # buyer
        "BH-000042", "Issue date 1 April 2025", "Due date 1 May 2025", "1 March 2025 – 31 March 2025",
        "Paid",  # payment status
        "€0.02053485", "Tier 2: 101 – 1,000 · flat €5.00", "900", "€0.02", "€23.00", "Tier 3: 1,001 and above", "€2.34",
        "Subtotal €74.34", "Coupon: Welcome offer -€10.00", "Subtotal excl. tax €64.34",
        "VAT (20 % of €42.41) €8.48", "Reduced VAT (10 % of €21.93) €2.19", "Total incl. tax €75.01",
        "Credit note BH-000041-CN001 -€15.00", "Prepaid credits (12.5 credits) -€12.50", "Amount due €47.51",
    ):
        assert expected in text, expected
    assert "Tier 4" not in text  # a tier not reached is not printed
    assert "Tier 1: 0 – 100" in text  # the free tier is reached (100 units)


@pytest.mark.parametrize(
    ("currency", "exponent", "due", "coupon"),
    [("JPY", 0, "¥4,751", "-¥1,000"), ("KWD", 3, "4.751 KWD", "-1.000 KWD"), ("USD", 2, "$47.51", "-$10.00")],
)
def test_totals_use_the_currency_symbol_and_decimals(currency: str, exponent: int, due: str, coupon: str) -> None:
    html = render_invoice_html(make_full_invoice(currency, exponent), Seller())
    assert f"Amount due</th><td class=\"num\">{due}" in html
    assert coupon in html


def test_one_off_and_voided_invoices_say_so() -> None:
    invoice = replace(make_invoice(), invoice_type="one_off", status="voided", payment_status="failed")
    html = render_invoice_html(invoice, Seller())
    assert "Invoice (one-off)" in html and "Voided" in html and "Payment failed" in html
    assert "Billing period" not in html


def render_png(pdf: Path, out: Path, page: int = 1, dpi: int = 110) -> Path:
    """Render one page of a PDF to PNG (PDFium, from its wheel), for a visual check."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        document[page - 1].render(scale=dpi / 72).to_pil().save(out, format="PNG")
    finally:
        document.close()
    return out


def test_first_page_renders_to_png(tmp_path: Path) -> None:
    from PIL import Image

    invoice = make_full_invoice()
    pdf = render_invoice_pdf(invoice, Seller.from_organization(ORGANIZATION), tmp_path)
    png = render_png(pdf, tmp_path / "page1.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert abs(height / width - 297 / 210) < 0.01  # one A4 page, portrait
    with Image.open(png) as image:
        darkest, lightest = image.convert("L").getextrema()
    assert lightest > 240 and darkest < 80, "a white page with dark text on it"
    if os.environ.get(EXAMPLE_PNG_ENV):
        shutil.copyfile(png, os.environ[EXAMPLE_PNG_ENV])
