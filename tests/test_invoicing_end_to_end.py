"""End to end: a close finalizes, charges through Stripe once and sends signed webhooks.

Real parts only: chDB + dbt, embedded PostgreSQL, a localstripe server and a webhook
receiver on loopback. One scenario, closed twice with the same ``as_of`` (the second is
the re-run), with ``STRIPE_API_KEY``/``STRIPE_API_BASE`` pointing at localstripe — the
way an operator configures ``billhouse close``. Hand-computed (October 2025):

- cus_card (card 4242…): subscription €10.00 + graduated API calls (150 calls, 0–100
  free, then €0.01: €0.50) = 1050; minimum commitment 10000 → true-up 8950;
  coupon €10 → 9000; VAT 20 % → 1800 → 10800; wallet 50 credits x €1 → 5000 taken
  (the wallet is emptied: ``wallet.depleted``); charged 5800 once.
- cus_declined (card 4000…0341, every charge declined): subscription €20.00, VAT
  €4.00 → 2400; the charge fails, the next retry is a day later, and the invoice
  (due on issue) is overdue from 2025-11-02, long before any run of this test.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from billhouse.catalog import parse_catalog
from billhouse.close import CloseReport, close, collection_summary, load_inputs
from billhouse.commercial_terms import parse_commercial_terms
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from invoicing.ledger import FinalizedInvoice, get_invoice
from invoicing.migrations import migrate
from invoicing.payments import get_collection, list_payment_attempts, set_up_stripe_customer
from invoicing.pdf import Seller
from invoicing.stripe_gateway import StripeGateway
from invoicing.webhooks import SIGNATURE_HEADER, add_webhook_endpoint, verify_signature

from .loopback_servers import Receiver, localstripe_charges, run_localstripe, run_webhook_receiver

API_KEY = "sk_test_billhouse_e2e"
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"
SECRET = "whsec_end_to_end_0123456789"
AS_OF = datetime(2025, 11, 1, tzinfo=UTC)

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
  - {code: flat, name: Flat, interval: monthly, amount_cents: 2000, amount_currency: EUR, charges: []}
customers:
  - external_id: cus_card
    name: Jane Corp
    currency: EUR
    applied_coupons: [ten_euros]
    wallet: {rate_amount: "1", granted_credits: "50"}
  - {external_id: cus_declined, name: Decline Ltd, currency: EUR}
subscriptions:
  - {external_id: sub_card, external_customer_id: cus_card, plan_code: committed,
     subscription_at: "2025-10-01T00:00:00Z"}
  - {external_id: sub_declined, external_customer_id: cus_declined, plan_code: flat,
     subscription_at: "2025-10-01T00:00:00Z"}
""")

EVENTS = [
    {"transaction_id": f"tx_{i}", "external_subscription_id": "sub_card", "code": "api_calls",
     "timestamp": (datetime(2025, 10, 2, tzinfo=UTC) + timedelta(minutes=i)).isoformat(), "properties": {}}
    for i in range(150)
]


@dataclass
class Closed:
    settings: Settings
    stripe_base: str
    stripe_ids: dict[str, str]  # external customer id -> cus_ id
    receiver: Receiver
    requests_after_first: int
    first: CloseReport
    rerun: CloseReport

    def invoice(self, customer: str) -> FinalizedInvoice:
        (invoice,) = [i for i in self.first.invoices if i.external_customer_id == customer]
        return invoice


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("invoicing_e2e")))
    with run_localstripe(API_KEY) as stripe_base, run_webhook_receiver(failures=0) as (receiver, url):
        try:
            load_inputs(settings, parse_catalog(DOCUMENT), EVENTS)
            gateway = StripeGateway(API_KEY, api_base=stripe_base)
            stripe_ids = {}
            with ledger(settings) as conn:
                migrate(conn)
                add_webhook_endpoint(conn, url, secret=SECRET)
                for customer, card in (("cus_card", GOOD_CARD), ("cus_declined", DECLINED_CARD)):
                    method = gateway.create_card_payment_method(card)
                    linked = set_up_stripe_customer(conn, gateway, customer, payment_method_id=method)
                    stripe_ids[customer] = linked.stripe_customer_id
            seller = Seller.from_organization(DOCUMENT["organization"])
            terms = parse_commercial_terms(DOCUMENT)
            with pytest.MonkeyPatch.context() as env:  # only for these closes, not the module
                env.setenv("STRIPE_API_KEY", API_KEY)
                env.setenv("STRIPE_API_BASE", stripe_base)
                env.delenv("BILLHOUSE_RETRY_AFTER_DAYS", raising=False)  # default 1, 3, 7 days
                first = close(settings, AS_OF, seller, terms=terms, refresh_finance_marts=False)
                requests_after_first = len(receiver.requests)
                rerun = close(settings, AS_OF, seller, terms=terms, refresh_finance_marts=False)
            yield Closed(settings, stripe_base, stripe_ids, receiver, requests_after_first, first, rerun)
        finally:
            stop_ledger(settings)


def test_the_close_charges_the_amount_due_after_coupon_tax_and_wallet_exactly_once(closed: Closed) -> None:
    invoice = closed.invoice("cus_card")
    assert (invoice.sub_total_cents, invoice.coupons_cents, invoice.taxes_cents) == (10000, 1000, 1800)
    assert (invoice.prepaid_credits_cents, invoice.total_cents) == (5000, 5800)
    assert closed.first.payments is not None and closed.first.payments.succeeded == [invoice.id]
    charges = localstripe_charges(closed.stripe_base, closed.stripe_ids["cus_card"], API_KEY)
    assert [(c.status, c.amount, c.currency) for c in charges] == [("succeeded", 5800, "eur")]
    with ledger(closed.settings) as conn:
        assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
        (attempt,) = list_payment_attempts(conn, invoice.id)
        assert attempt.idempotency_key == f"billhouse-{invoice.id}-1"
        assert attempt.payment_intent_id == charges[0].payment_intent


def test_a_declined_card_fails_is_scheduled_for_a_retry_and_the_invoice_is_overdue(closed: Closed) -> None:
    invoice = closed.invoice("cus_declined")
    assert (invoice.sub_total_cents, invoice.taxes_cents, invoice.total_cents) == (2000, 400, 2400)
    payments = closed.first.payments
    assert payments is not None
    assert payments.failed == [invoice.id] and payments.overdue == [invoice.id]
    charges = localstripe_charges(closed.stripe_base, closed.stripe_ids["cus_declined"], API_KEY)
    assert [(c.status, c.amount) for c in charges] == [("failed", 2400)]
    with ledger(closed.settings) as conn:
        assert get_invoice(conn, id=invoice.id).payment_status == "failed"
        collection = get_collection(conn, invoice.id)
        assert collection is not None and collection.overdue
        assert collection.first_failed_at is not None and collection.next_attempt_at is not None
        assert collection.next_attempt_at - collection.first_failed_at == timedelta(days=1)


def test_rerunning_the_close_issues_charges_and_sends_nothing_more(closed: Closed) -> None:
    assert [i.number for i in closed.rerun.invoices] == [i.number for i in closed.first.invoices]
    assert closed.rerun.created == []
    payments = closed.rerun.payments
    assert payments is not None
    assert (payments.taken_on, payments.succeeded, payments.failed, payments.recovered, payments.overdue) == (
        [], [], [], [], []
    )
    for customer in ("cus_card", "cus_declined"):
        assert len(localstripe_charges(closed.stripe_base, closed.stripe_ids[customer], API_KEY)) == 1
    assert closed.rerun.webhooks is not None and closed.rerun.webhooks.delivered == []
    assert len(closed.receiver.requests) == closed.requests_after_first
    assert collection_summary(closed.first) == [
        "payments: paid 1, failed 1, newly overdue 1, Stripe errors 0",
        "webhooks: delivered 8, retrying 0, gave up 0",
    ]
    assert collection_summary(closed.rerun) == [
        "payments: paid 0, failed 0, newly overdue 0, Stripe errors 0",
        "webhooks: delivered 0, retrying 0, gave up 0",
    ]


def test_the_receiver_gets_every_event_of_the_close_once_and_signed(closed: Closed) -> None:
    card, declined = closed.invoice("cus_card"), closed.invoice("cus_declined")
    received = []
    for request in closed.receiver.requests:
        verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body)
        body = json.loads(request.body)
        assert body["id"] == request.headers["billhouse-event-id"]
        received.append((body["type"], body["object_id"]))
    wallet_id = next(json.loads(r.body)["object_id"] for r in closed.receiver.requests
                     if r.headers["billhouse-event-type"] == "wallet.depleted")
    assert Counter(received) == Counter({
        ("invoice.created", str(card.id)): 1, ("invoice.finalized", str(card.id)): 1,
        ("invoice.payment_succeeded", str(card.id)): 1, ("wallet.depleted", wallet_id): 1,
        ("invoice.created", str(declined.id)): 1, ("invoice.finalized", str(declined.id)): 1,
        ("invoice.payment_failed", str(declined.id)): 1, ("invoice.overdue", str(declined.id)): 1,
    })
    report = closed.first.webhooks
    assert report is not None and len(report.delivered) == 8 and report.retrying == report.failed == []
    paid = next(json.loads(r.body) for r in closed.receiver.requests
                if r.headers["billhouse-event-type"] == "invoice.payment_succeeded")
    assert paid["data"]["invoice"]["number"] == card.number


def test_a_close_without_stripe_or_endpoints_neither_collects_nor_delivers(billed) -> None:  # noqa: ANN001
    # tests/conftest.py closes with no STRIPE_API_KEY and no webhook endpoint
    for report in (billed.first_close, billed.second_close, billed.rerun_close):
        assert report.payments is None and report.webhooks is None
        assert collection_summary(report) == []
