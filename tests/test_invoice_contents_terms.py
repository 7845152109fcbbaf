"""Commercial terms authored in the catalog YAML, applied to a real ledger and billed.

The same document is a valid pricing catalog (``billhouse.catalog``) and carries the
taxes, coupons, add-ons, wallets and payment terms (``billhouse.commercial_terms``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
import yaml

from billhouse.catalog import parse_catalog
from billhouse.commercial_terms import apply_commercial_terms, parse_commercial_terms
from billhouse.errors import CatalogError
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from invoicing.coupons import list_applied_coupons
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.finalize import finalize_drafts
from invoicing.migrations import migrate
from invoicing.wallets import get_wallet, wallet_transactions

DOCUMENT = yaml.safe_load("""
billable_metrics:
  - {code: api_calls, name: API calls, aggregation_type: count_agg}
taxes:
  - {code: vat_fr, name: "VAT 20%", rate: "20", applied_to_organization: true}
  - {code: vat_zero, name: "Exempt", rate: "0"}
  - {code: vat_de, name: "MwSt 19%", rate: "19"}
coupons:
  - {code: welcome, name: Welcome, coupon_type: fixed_amount, amount_cents: 2000,
     amount_currency: EUR, frequency: recurring, frequency_duration: 3}
add_ons:
  - {code: setup, name: Setup fee, amount_cents: 15000, amount_currency: EUR}
plans:
  - code: pro
    name: Pro
    interval: monthly
    amount_cents: 10000
    amount_currency: EUR
    charges:
      - billable_metric_code: api_calls
        charge_model: standard
        properties: {amount: "0.01"}
        tax_codes: [vat_zero]
customers:
  - external_id: cus_fr
    name: Client FR
    currency: EUR
    net_payment_term: 15
    applied_coupons: [welcome]
    wallet: {rate_amount: "1", paid_credits: "10", granted_credits: "5"}
  - external_id: cus_de
    name: Kunde DE
    currency: EUR
    tax_codes: [vat_de]
    applied_coupons: [{coupon_code: welcome, amount_cents: 500}]
subscriptions:
  - {external_id: sub_fr, external_customer_id: cus_fr, plan_code: pro, subscription_at: "2025-03-01T00:00:00Z"}
""")

MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def fees_for(customer: str) -> tuple[DraftFee, ...]:
    common = dict(external_subscription_id=f"sub_{customer}", plan_code="pro", period_start=MARCH[0],
                  period_end=MARCH[1])
    return (
        DraftFee(fee_key=f"{customer}/sub", kind="subscription", billable_metric_code=None, charge_model=None,
                 invoice_display_name="Pro", units=Decimal(1), unit_amount=Decimal(100), precise_amount=Decimal(100),
                 amount_cents=10000, **common),  # type: ignore[arg-type]
        DraftFee(fee_key=f"{customer}/api", kind="charge", billable_metric_code="api_calls", charge_model="standard",
                 invoice_display_name="API calls", units=Decimal(5000), unit_amount=Decimal("0.01"),
                 precise_amount=Decimal(50), amount_cents=5000, charge_id="pro/0", **common),  # type: ignore[arg-type]
    )


def draft(customer: str) -> InvoiceDraft:
    return InvoiceDraft(f"{customer}/EUR/2025-04-01", customer, customer, "EUR", 2, date(2025, 4, 1), MARCH[0],
                        MARCH[1], 15000, 15000, fees_for(customer))


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("terms"))
    try:
        with ledger(settings) as conn:
            migrate(conn)
            yield conn
    finally:
        stop_ledger(settings)


def test_the_document_is_still_a_valid_pricing_catalog() -> None:
    catalog = parse_catalog(DOCUMENT)
    assert [p.code for p in catalog.plans] == ["pro"] and catalog.plans[0].charges[0].charge_id == "pro/0"


def test_terms_from_yaml_are_applied_once_and_billed(conn: psycopg.Connection) -> None:
    terms = parse_commercial_terms(DOCUMENT, "catalog.yml")
    assert terms.charge_tax_codes == {"pro/0": ("vat_zero",)} and not terms.empty
    apply_commercial_terms(conn, terms)
    apply_commercial_terms(conn, terms)  # a second load changes nothing
    assert len(list_applied_coupons(conn, "cus_fr")) == 1
    assert [t.credits for t in wallet_transactions(conn, "cus_fr")] == [Decimal(15)]

    fr, de = finalize_drafts(conn, [draft("cus_fr"), draft("cus_de")])
    # cus_fr: 15000 - 2000 coupon (pro rata 1333.33 / 666.67); VAT 20 % on the plan 8666.67 = 1733.33,
    # the charge is exempt (charge level beats the entity) -> 1733; 14733 - wallet 1500 = 13233; due in 15 days
    assert (fr.coupons_cents, fr.taxes_cents, fr.prepaid_credits_cents, fr.total_cents) == (2000, 1733, 1500, 13233)
    assert fr.due_date == date(2025, 4, 16)
    # cus_de: coupon overridden to 500 (333.33 / 166.67); plan taxed at the customer's 19 %:
    # 9666.67 x 19 % = 1836.67 -> 1837; charge exempt; 15000 - 500 + 1837 = 16337
    assert (de.coupons_cents, de.taxes_cents, de.total_cents) == (500, 1837, 16337)
    wallet = get_wallet(conn, "cus_fr")
    assert wallet is not None and wallet.credits_balance == 0


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"taxes": [{"code": "t", "rate": 0.2}]}, "write decimals as strings"),
        ({"taxes": [{"code": "t", "rate": "120"}]}, "from 0 to 100"),
        ({"customers": [{"external_id": "c", "tax_codes": ["nope"]}]}, "'nope' is not defined in taxes"),
        ({"coupons": [{"code": "c", "coupon_type": "gift"}]}, "coupon_type"),
        ({"coupons": [{"code": "c", "coupon_type": "percentage", "frequency": "recurring",
                       "percentage_rate": "10"}]}, "frequency_duration"),
        ({"customers": [{"external_id": "c", "applied_coupons": ["ghost"]}]}, "'ghost' is not defined in coupons"),
        ({"taxes": [{"code": "t", "rate": "1"}, {"code": "t", "rate": "2"}]}, "appears twice"),
    ],
)
def test_invalid_terms_name_the_object_and_field(patch: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_commercial_terms(patch, "catalog.yml")
