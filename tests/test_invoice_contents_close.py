"""End to end: a close over real chDB + dbt + PostgreSQL bills commitments, tiers and terms.

One scenario, one close (built once for the module): a plan with a minimum commitment
and a graduated charge, commercial terms from the same YAML (VAT on the billing
entity, a once coupon, a wallet), finalized and rendered to PDF. Hand-computed:

- 150 API calls in October, graduated 0–100 free then €0.01: 50 x 0.01 = €0.50 (50);
- subscription fee €10.00 (1000); fees 1050 < minimum 10000 → true-up 8950;
- subtotal 10000; coupon €10.00 (1000) → 9000; VAT 20 % → 1800; 10800;
- wallet 50 credits x €1 → 5000; amount due 5800.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from billhouse.catalog import parse_catalog
from billhouse.close import CloseReport, close, load_inputs
from billhouse.commercial_terms import parse_commercial_terms
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from invoicing.pdf import Seller
from invoicing.wallets import wallet_transactions

DOCUMENT = yaml.safe_load("""
organization: {name: Acme Cloud, legal_name: Acme Cloud SAS, address_line1: 1 Main St, city: Paris, country: France}
billable_metrics:
  - {code: api_calls, name: API calls, aggregation_type: count_agg}
taxes:
  - {code: vat_20, name: "VAT 20%", rate: "20", applied_to_organization: true}
coupons:
  - {code: ten_euros, name: "€10 off", coupon_type: fixed_amount, amount_cents: 1000, amount_currency: EUR,
     frequency: once}
plans:
  - code: committed
    name: Committed
    interval: monthly
    amount_cents: 1000
    amount_currency: EUR
    minimum_commitment: {amount_cents: 10000}
    charges:
      - billable_metric_code: api_calls
        charge_model: graduated
        properties:
          graduated_ranges:
            - {from_value: 0, to_value: 100, per_unit_amount: "0", flat_amount: "0"}
            - {from_value: 101, to_value: null, per_unit_amount: "0.01", flat_amount: "0"}
customers:
  - external_id: cus_1
    name: Jane Corp
    currency: EUR
    applied_coupons: [ten_euros]
    wallet: {rate_amount: "1", granted_credits: "50"}
subscriptions:
  - {external_id: sub_1, external_customer_id: cus_1, plan_code: committed,
     subscription_at: "2026-10-01T00:00:00Z"}
""")

EVENTS = [
    {"transaction_id": f"tx_{i}", "external_subscription_id": "sub_1", "code": "api_calls",
     "timestamp": (datetime(2026, 10, 2, tzinfo=UTC) + timedelta(minutes=i)).isoformat(), "properties": {}}
    for i in range(150)
]


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, CloseReport]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("contents_close")))
    try:
        load_inputs(settings, parse_catalog(DOCUMENT), EVENTS)
        report = close(settings, datetime(2026, 11, 1, tzinfo=UTC),
                       Seller.from_organization(DOCUMENT["organization"]), terms=parse_commercial_terms(DOCUMENT))
        yield settings, report
    finally:
        stop_ledger(settings)


def test_close_bills_the_commitment_true_up_coupon_tax_and_wallet(closed: tuple[Settings, CloseReport]) -> None:
    settings, report = closed
    (invoice,) = report.invoices
    by_kind = {fee.kind: fee for fee in invoice.fees}
    assert {k: f.amount_cents for k, f in by_kind.items()} == {"subscription": 1000, "charge": 50, "commitment": 8950}
    assert by_kind["charge"].charge_id == "committed/0"
    assert (invoice.sub_total_cents, invoice.coupons_cents, invoice.taxes_cents) == (10000, 1000, 1800)
    assert (invoice.prepaid_credits_cents, invoice.total_cents) == (5000, 5800)
    with ledger(settings) as conn:
        assert [t.balance_after for t in wallet_transactions(conn, "cus_1")] == [Decimal(50), Decimal(0)]


def test_the_graduated_fee_keeps_its_tiers_and_the_pdf_prints_them(closed: tuple[Settings, CloseReport]) -> None:
    import pypdf

    _, report = closed
    (invoice,) = report.invoices
    charge = next(fee for fee in invoice.fees if fee.kind == "charge")
    tiers = (charge.details or {}).get("tiers") or []
    assert [(Decimal(t["units"]), Decimal(t["amount"])) for t in tiers] == [(100, 0), (50, Decimal("0.5"))]
    text = " ".join(" ".join(p.extract_text() for p in pypdf.PdfReader(report.pdfs[invoice.number]).pages).split())
    for expected in ("Acme Cloud SAS", "Jane Corp", "Minimum commitment true-up", "€89.50", "Tier 2: 101 and above",
                     "Coupon: €10 off -€10.00", "VAT 20% (20 % of €90.00) €18.00", "Amount due €58.00"):
        assert expected in text, expected
