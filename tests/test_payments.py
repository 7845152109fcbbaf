"""Payments through Stripe: charged exactly once, retried on schedule, then overdue.

Runs against a real ``localstripe`` server started on loopback for this module and a
real embedded PostgreSQL (one server per module, one fresh ledger database per test,
because a collection run takes on every invoice of its ledger). localstripe's cards:
4242 4242 4242 4242 charges; 4000 0000 0000 0341 attaches to a customer but every
charge on it is declined (``card_declined``). A crash is a real ``os._exit`` of a
collector subprocess at a named point (``BILLHOUSE_CRASH_AT``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest
from psycopg import sql

from billhouse.ledger_connection import ledger_url, stop_ledger
from billhouse.settings import Settings
from invoicing.credit_notes import create_credit_note
from invoicing.customers import set_net_payment_term
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.dunning import PaymentPolicy, PaymentPolicyError
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedInvoice, get_invoice
from invoicing.migrations import migrate
from invoicing.payments import (
    CRASH_ENV,
    PaymentSetupError,
    collect,
    get_collection,
    list_payment_attempts,
    retry_collection,
    set_default_payment_method,
    set_up_stripe_customer,
)
from invoicing.stripe_gateway import ATTEMPT_METADATA_KEY, StripeGateway

from .loopback_servers import StripeCharge, free_port, localstripe_charges, run_localstripe

PROJECT_DIR = Path(__file__).resolve().parent.parent
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000341"  # attaches, then every charge is declined
API_KEY = "sk_test_billhouse"
ISSUED = date(2025, 4, 1)
T0 = datetime(2025, 4, 1, 6, 0, tzinfo=UTC)  # the first collection run
DAY = timedelta(days=1)


# -- servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stripe_base() -> Iterator[str]:
    with run_localstripe(API_KEY) as base:
        yield base


@pytest.fixture(scope="module")
def gateway(stripe_base: str) -> StripeGateway:
    return StripeGateway(API_KEY, api_base=stripe_base)


@pytest.fixture(scope="module")
def server_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("payments"))
    ledger_url(settings)
    yield settings
    stop_ledger(settings)


@pytest.fixture
def ledger_db(server_settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Settings pointing at a fresh, migrated ledger database for this test."""
    server_url = ledger_url(server_settings)
    name = "pay_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url.replace("/billhouse?", f"/{name}?", 1)
    assert url != server_url
    settings = Settings(data_dir=server_settings.data_dir, database_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return settings


@pytest.fixture
def conn(ledger_db: Settings) -> Iterator[psycopg.Connection]:
    assert ledger_db.database_url
    with psycopg.connect(ledger_db.database_url, autocommit=True) as conn:
        yield conn


# -- helpers ----------------------------------------------------------------------


def issue(conn: psycopg.Connection, customer: str, *fee_cents: int, currency: str = "EUR") -> FinalizedInvoice:
    """Finalize a one-customer draft with these fees (hand-computed total: their sum)."""
    period = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    fees = tuple(
        DraftFee(
            fee_key=f"{customer}/fee-{i}",
            kind="charge",
            external_subscription_id=f"sub-{customer}",
            plan_code="startup",
            billable_metric_code="api_calls",
            charge_model="standard",
            invoice_display_name=f"API calls {i}",
            period_start=period[0],
            period_end=period[1],
            units=Decimal(cents),
            unit_amount=Decimal(1),
            precise_amount=Decimal(cents) / 100,
            amount_cents=cents,
        )
        for i, cents in enumerate(fee_cents)
    )
    total = sum(fee_cents)
    draft = InvoiceDraft(
        invoice_key=f"{customer}/{currency}/{ISSUED}",
        external_customer_id=customer,
        customer_name=customer.title(),
        currency=currency,
        currency_exponent=0 if currency == "JPY" else 2,
        issuing_date=ISSUED,
        period_start=period[0],
        period_end=period[1],
        sub_total_cents=total,
        total_cents=total,
        fees=fees,
    )
    (invoice,) = finalize_drafts(conn, [draft])
    return invoice


def customer_with_card(conn: psycopg.Connection, gateway: StripeGateway, customer: str, card: str) -> str:
    method = gateway.create_card_payment_method(card)
    return set_up_stripe_customer(conn, gateway, customer, name=customer, payment_method_id=method).stripe_customer_id


def stripe_charges(base: str, stripe_customer_id: str) -> list[StripeCharge]:
    return localstripe_charges(base, stripe_customer_id, API_KEY)


def stripe_payment_intent(base: str, payment_intent_id: str) -> dict:
    response = httpx.get(f"{base}/v1/payment_intents/{payment_intent_id}", auth=(API_KEY, ""))
    response.raise_for_status()
    return response.json()


def events(conn: psycopg.Connection, object_id: UUID) -> list[tuple[str, dict]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT event_type, payload FROM webhook_events WHERE object_id = %s"
            " ORDER BY position",
            (str(object_id),),
        )
    ]


def event_types(conn: psycopg.Connection, object_id: UUID) -> list[str]:
    return [event_type for event_type, _ in events(conn, object_id)]


# -- policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_days", "failed_attempts", "expected_after_first_failure"),
    [
        ((1, 3, 7), 1, timedelta(days=1)),
        ((1, 3, 7), 2, timedelta(days=3)),
        ((1, 3, 7), 3, timedelta(days=7)),
        ((1, 3, 7), 4, None),
        ((2,), 1, timedelta(days=2)),
        ((2,), 2, None),
        ((), 1, None),
    ],
)
def test_retries_are_offsets_from_the_first_failure(
    retry_after_days: tuple[int, ...], failed_attempts: int, expected_after_first_failure: timedelta | None
) -> None:
    policy = PaymentPolicy(retry_after_days)
    expected = None if expected_after_first_failure is None else T0 + expected_after_first_failure
    assert policy.next_attempt_at(T0, failed_attempts) == expected


@pytest.mark.parametrize("bad", [(0,), (-1, 2), (3, 1), (1, 1), (1.5,)])
def test_a_retry_schedule_must_be_positive_whole_days_increasing(bad: tuple) -> None:
    with pytest.raises(PaymentPolicyError) as error:
        PaymentPolicy(bad)
    assert error.value.field == "retry_after_days"


def test_the_retry_schedule_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BILLHOUSE_RETRY_AFTER_DAYS", raising=False)
    assert PaymentPolicy.from_env() == PaymentPolicy((1, 3, 7))
    monkeypatch.setenv("BILLHOUSE_RETRY_AFTER_DAYS", "2, 5")
    assert PaymentPolicy.from_env() == PaymentPolicy((2, 5))
    monkeypatch.setenv("BILLHOUSE_RETRY_AFTER_DAYS", "")
    assert PaymentPolicy.from_env() == PaymentPolicy(())
    monkeypatch.setenv("BILLHOUSE_RETRY_AFTER_DAYS", "1,x")
    with pytest.raises(PaymentPolicyError):
        PaymentPolicy.from_env()


# -- collection -------------------------------------------------------------------


def test_an_invoice_is_charged_once_for_its_total_with_an_attempt_keyed_idempotency_key(
    conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    stripe_customer = customer_with_card(conn, gateway, "acme", GOOD_CARD)
    invoice = issue(conn, "acme", 1000, 234)  # 12.34 EUR

    report = collect(conn, gateway, now=T0)

    assert report.taken_on == [invoice.id]
    assert report.succeeded == [invoice.id] and not report.failed
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
    (attempt,) = list_payment_attempts(conn, invoice.id)
    assert (attempt.attempt_number, attempt.status, attempt.amount_cents, attempt.currency) == (
        1, "succeeded", 1234, "EUR"
    )
    assert attempt.idempotency_key == f"billhouse-{invoice.id}-1"
    (charge,) = stripe_charges(stripe_base, stripe_customer)
    assert (charge.status, charge.amount, charge.currency) == ("succeeded", 1234, "eur")
    assert charge.payment_intent == attempt.payment_intent_id and charge.id == attempt.charge_id
    intent = stripe_payment_intent(stripe_base, charge.payment_intent)
    assert intent["metadata"][ATTEMPT_METADATA_KEY] == attempt.idempotency_key
    assert intent["metadata"]["billhouse_invoice_id"] == str(invoice.id)
    collection = get_collection(conn, invoice.id)
    assert collection is not None and collection.state == "succeeded" and not collection.overdue
    assert event_types(conn, invoice.id) == [
        "invoice.created", "invoice.finalized", "invoice.payment_succeeded"
    ]
    paid_event = events(conn, invoice.id)[-1][1]
    assert paid_event["payment"]["amount_cents"] == 1234
    assert paid_event["invoice"]["payment_status"] == "succeeded"

    # Later runs (even past the due date) charge nothing more and flag nothing.
    again = collect(conn, gateway, now=T0 + 30 * DAY)
    assert again.taken_on == [] and again.succeeded == [] and again.overdue == []
    assert len(stripe_charges(stripe_base, stripe_customer)) == 1
    assert len(list_payment_attempts(conn, invoice.id)) == 1


def test_a_declined_payment_is_retried_a_day_later_on_the_new_payment_method(
    conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    stripe_customer = customer_with_card(conn, gateway, "bolt", DECLINED_CARD)
    invoice = issue(conn, "bolt", 5000)

    first = collect(conn, gateway, now=T0)

    assert first.failed == [invoice.id]
    assert get_invoice(conn, id=invoice.id).payment_status == "failed"
    (declined,) = list_payment_attempts(conn, invoice.id)
    assert (declined.status, declined.failure_code) == ("failed", "card_declined")
    collection = get_collection(conn, invoice.id)
    assert collection is not None
    assert (collection.state, collection.first_failed_at, collection.next_attempt_at) == (
        "collecting", T0, T0 + DAY
    )
    failed_event = events(conn, invoice.id)[-1]
    assert failed_event[0] == "invoice.payment_failed"
    assert failed_event[1]["payment"]["failure_code"] == "card_declined"
    assert failed_event[1]["payment"]["final"] is False

    # The customer gives a working card; nothing is tried before the retry is due, but
    # the invoice (due on its issuing date, 04-01) is overdue from 04-02 00:00 UTC.
    good_card = gateway.create_card_payment_method(GOOD_CARD)
    set_default_payment_method(conn, gateway, "bolt", good_card)
    waiting = collect(conn, gateway, now=T0 + timedelta(hours=23))
    assert (waiting.succeeded, waiting.overdue) == ([], [invoice.id])
    assert len(stripe_charges(stripe_base, stripe_customer)) == 1

    retried = collect(conn, gateway, now=T0 + DAY)

    assert retried.succeeded == [invoice.id] and retried.overdue == []
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
    attempts = list_payment_attempts(conn, invoice.id)
    assert [(a.attempt_number, a.status, a.payment_method_id) for a in attempts] == [
        (1, "failed", declined.payment_method_id),
        (2, "succeeded", good_card),
    ]
    assert attempts[1].idempotency_key == f"billhouse-{invoice.id}-2"
    charges = stripe_charges(stripe_base, stripe_customer)
    by_id = {c.id: (c.status, c.amount) for c in charges}
    assert len(charges) == 2
    assert [by_id[a.charge_id] for a in attempts] == [("failed", 5000), ("succeeded", 5000)]
    assert event_types(conn, invoice.id)[2:] == [
        "invoice.payment_failed", "invoice.overdue", "invoice.payment_succeeded"
    ]
    collection = get_collection(conn, invoice.id)
    assert collection is not None and collection.state == "succeeded" and not collection.overdue


def test_every_retry_failing_exhausts_the_schedule_and_the_unpaid_invoice_is_overdue(
    conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    stripe_customer = customer_with_card(conn, gateway, "crux", DECLINED_CARD)
    invoice = issue(conn, "crux", 999)
    policy = PaymentPolicy((1, 3, 7))
    # run at -> (attempts made so far, next attempt, state, overdue), computed by hand:
    # due 2025-04-01 (net 0), so overdue from the run on 04-02.
    runs = [
        (T0, 1, T0 + DAY, "collecting", False),
        (T0 + timedelta(hours=12), 1, T0 + DAY, "collecting", False),
        (T0 + DAY, 2, T0 + 3 * DAY, "collecting", True),
        (T0 + 3 * DAY, 3, T0 + 7 * DAY, "collecting", True),
        (T0 + 7 * DAY, 4, None, "exhausted", True),
        (T0 + 30 * DAY, 4, None, "exhausted", True),
    ]
    for at, attempts, next_at, state, overdue in runs:
        report = collect(conn, gateway, policy=policy, now=at)
        collection = get_collection(conn, invoice.id)
        assert collection is not None
        assert len(list_payment_attempts(conn, invoice.id)) == attempts, at
        assert (collection.next_attempt_at, collection.state, collection.overdue) == (next_at, state, overdue), at
        assert report.overdue == ([invoice.id] if at == T0 + DAY else [])

    assert collection.due_date == ISSUED and collection.overdue_at == T0 + DAY
    assert get_invoice(conn, id=invoice.id).payment_status == "failed"
    assert [c.status for c in stripe_charges(stripe_base, stripe_customer)] == ["failed"] * 4
    failed = [p for t, p in events(conn, invoice.id) if t == "invoice.payment_failed"]
    assert [p["payment"]["attempt_number"] for p in failed] == [1, 2, 3, 4]
    assert [p["payment"]["final"] for p in failed] == [False, False, False, True]
    assert event_types(conn, invoice.id).count("invoice.overdue") == 1

    # An operator reopens it after the customer fixed their card: paid, no longer overdue.
    set_default_payment_method(conn, gateway, "crux", gateway.create_card_payment_method(GOOD_CARD))
    retry_collection(conn, invoice.id, at=T0 + 31 * DAY)
    assert collect(conn, gateway, policy=policy, now=T0 + 31 * DAY).succeeded == [invoice.id]
    collection = get_collection(conn, invoice.id)
    assert collection is not None and collection.state == "succeeded" and not collection.overdue


def test_with_net_terms_past_the_last_retry_the_invoice_is_overdue_only_after_the_retries(
    conn: psycopg.Connection, gateway: StripeGateway
) -> None:
    customer_with_card(conn, gateway, "cove", DECLINED_CARD)
    set_net_payment_term(conn, "cove", 8)  # due 2025-04-09, overdue from 04-10
    invoice = issue(conn, "cove", 450)
    policy = PaymentPolicy((1, 3, 7))
    # run at -> (attempts so far, overdue), by hand
    runs = [
        (T0, 1, False),
        (T0 + DAY, 2, False),
        (T0 + 3 * DAY, 3, False),
        (T0 + 7 * DAY, 4, False),  # last retry fails: exhausted, not yet overdue
        (datetime(2025, 4, 9, 23, 59, tzinfo=UTC), 4, False),
        (datetime(2025, 4, 10, 0, 0, tzinfo=UTC), 4, True),
    ]
    for at, attempts, overdue in runs:
        collect(conn, gateway, policy=policy, now=at)
        collection = get_collection(conn, invoice.id)
        assert collection is not None
        assert (len(list_payment_attempts(conn, invoice.id)), collection.overdue) == (attempts, overdue), at
    assert collection.due_date == date(2025, 4, 9) and collection.state == "exhausted"
    assert event_types(conn, invoice.id)[-2:] == ["invoice.payment_failed", "invoice.overdue"]


def test_an_invoice_with_nothing_due_is_paid_without_a_charge(
    conn: psycopg.Connection, gateway: StripeGateway
) -> None:
    invoice = issue(conn, "dune", 0)
    report = collect(conn, gateway, now=T0)
    assert report.taken_on == [invoice.id] and report.succeeded == []
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
    assert list_payment_attempts(conn, invoice.id) == []
    collection = get_collection(conn, invoice.id)
    assert collection is not None and (collection.state, collection.amount_due_cents) == ("succeeded", 0)
    assert collect(conn, gateway, now=T0 + 10 * DAY).overdue == []


def test_a_customer_without_a_payment_method_is_not_charged_and_falls_overdue(
    conn: psycopg.Connection, gateway: StripeGateway
) -> None:
    invoice = issue(conn, "echo", 700)
    assert collect(conn, gateway, now=T0).no_payment_method == [invoice.id]
    assert list_payment_attempts(conn, invoice.id) == []
    assert get_invoice(conn, id=invoice.id).payment_status == "pending"
    assert collect(conn, gateway, now=T0 + DAY).overdue == [invoice.id]
    with pytest.raises(PaymentSetupError) as error:
        set_default_payment_method(conn, gateway, "echo", "pm_whatever")
    assert error.value.field == "external_customer_id"


def test_a_voided_invoice_is_not_collected(conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str) -> None:
    stripe_customer = customer_with_card(conn, gateway, "fern", DECLINED_CARD)
    invoice = issue(conn, "fern", 300)
    collect(conn, gateway, now=T0)
    conn.execute("UPDATE invoices SET status = 'voided', voided_at = now() WHERE id = %s", (invoice.id,))
    report = collect(conn, gateway, now=T0 + 2 * DAY)
    assert report.failed == [] and report.overdue == []
    collection = get_collection(conn, invoice.id)
    assert collection is not None and (collection.state, collection.next_attempt_at) == ("canceled", None)
    assert len(stripe_charges(stripe_base, stripe_customer)) == 1


def test_two_collectors_at_once_charge_an_invoice_once(
    ledger_db: Settings, conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    stripe_customer = customer_with_card(conn, gateway, "gale", GOOD_CARD)
    invoice = issue(conn, "gale", 101)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            assert ledger_db.database_url
            with psycopg.connect(ledger_db.database_url, autocommit=True) as own:
                barrier.wait()
                collect(own, gateway, now=T0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [c.status for c in stripe_charges(stripe_base, stripe_customer)] == ["succeeded"]
    assert [a.status for a in list_payment_attempts(conn, invoice.id)] == ["succeeded"]


# -- crashes ----------------------------------------------------------------------

_COLLECTOR = """
import sys
from datetime import datetime
import psycopg
from invoicing.payments import collect
from invoicing.stripe_gateway import StripeGateway
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    report = collect(conn, StripeGateway(sys.argv[2], api_base=sys.argv[3]),
                     now=datetime.fromisoformat(sys.argv[4]))
print("succeeded", len(report.succeeded), "recovered", len(report.recovered))
"""


def run_collector(settings: Settings, stripe_base: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    assert settings.database_url
    return subprocess.run(
        [sys.executable, "-c", _COLLECTOR, settings.database_url, API_KEY, stripe_base, T0.isoformat()],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("crash_at", "charges_at_crash"),
    [("before_stripe_call", 0), ("after_stripe_call", 1)],
)
def test_a_collector_killed_around_the_stripe_call_charges_exactly_once_when_rerun(
    ledger_db: Settings,
    conn: psycopg.Connection,
    gateway: StripeGateway,
    stripe_base: str,
    crash_at: str,
    charges_at_crash: int,
) -> None:
    customer = f"hale-{crash_at}"
    stripe_customer = customer_with_card(conn, gateway, customer, GOOD_CARD)
    invoice = issue(conn, customer, 4200)

    crashed = run_collector(ledger_db, stripe_base, crash_at)

    assert crashed.returncode == 86, crashed.stderr
    (open_attempt,) = list_payment_attempts(conn, invoice.id)
    assert (open_attempt.status, open_attempt.payment_intent_id) == ("started", None)
    assert len(stripe_charges(stripe_base, stripe_customer)) == charges_at_crash
    assert get_invoice(conn, id=invoice.id).payment_status == "pending"

    rerun = run_collector(ledger_db, stripe_base, None)

    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split() == ["succeeded", "1", "recovered", "1"]
    (attempt,) = list_payment_attempts(conn, invoice.id)
    assert attempt.id == open_attempt.id and attempt.status == "succeeded"
    (charge,) = stripe_charges(stripe_base, stripe_customer)
    assert (charge.status, charge.amount, charge.payment_intent) == ("succeeded", 4200, attempt.payment_intent_id)
    assert stripe_payment_intent(stripe_base, charge.payment_intent)["metadata"][ATTEMPT_METADATA_KEY] == (
        open_attempt.idempotency_key
    )
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
    assert event_types(conn, invoice.id).count("invoice.payment_succeeded") == 1
    # and a third run changes nothing
    assert run_collector(ledger_db, stripe_base, None).returncode == 0
    assert len(stripe_charges(stripe_base, stripe_customer)) == 1


def test_the_cli_links_a_customer_collects_and_delivers(
    ledger_db: Settings, conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    invoice = issue(conn, "ivy", 2500)
    method = gateway.create_card_payment_method(GOOD_CARD)
    assert ledger_db.database_url
    env = {
        **{k: v for k, v in os.environ.items() if k != CRASH_ENV},
        "DATABASE_URL": ledger_db.database_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_base,
        "BILLHOUSE_RETRY_AFTER_DAYS": "2,4",
    }

    def billhouse(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "billhouse.cli", *args], env=env, cwd=PROJECT_DIR,
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    linked = billhouse("stripe-customer", "ivy", "--payment-method", method)
    assert linked.startswith("ivy -> cus_") and method in linked
    endpoint = billhouse("webhook-endpoint", f"http://127.0.0.1:{free_port()}/nobody")
    assert endpoint.splitlines()[1].startswith("whsec_")
    assert "paid 1," in billhouse("collect")
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"
    # the payment event was fanned out to the endpoint; nobody listens, so it is retried
    assert billhouse("deliver-webhooks").strip() == "delivered 0, retrying 1, gave up 0"


# -- refunds ----------------------------------------------------------------------


def stripe_refunds(base: str, payment_intent_id: str) -> list[tuple[int, str]]:
    response = httpx.get(
        f"{base}/v1/refunds", params={"payment_intent": payment_intent_id, "limit": 100}, auth=(API_KEY, "")
    )
    response.raise_for_status()
    return sorted((r["amount"], r["status"]) for r in response.json()["data"])


def credit_note_refund_status(conn: psycopg.Connection, credit_note_id: UUID) -> str | None:
    row = conn.execute("SELECT refund_status FROM credit_notes WHERE id = %s", (credit_note_id,)).fetchone()
    assert row is not None
    return row[0]


def test_a_credit_note_refund_goes_back_to_the_card_once(
    conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str
) -> None:
    customer_with_card(conn, gateway, "jade", GOOD_CARD)
    invoice = issue(conn, "jade", 8000)
    collect(conn, gateway, now=T0)
    (paid,) = list_payment_attempts(conn, invoice.id)
    assert paid.payment_intent_id is not None
    # 30.00 back to the card, 10.00 as credit for the next invoices
    note = create_credit_note(
        conn, invoice.id, idempotency_key="jade-cn-1", refund_amount_cents=3000, credit_amount_cents=1000
    )
    assert note.refund_status == "pending"

    report = collect(conn, gateway, now=T0 + DAY)

    assert report.refunds is not None and report.refunds.succeeded == [note.id]
    assert credit_note_refund_status(conn, note.id) == "succeeded"
    assert stripe_refunds(stripe_base, paid.payment_intent_id) == [(3000, "succeeded")]
    again = collect(conn, gateway, now=T0 + 2 * DAY)
    assert again.refunds is not None and again.refunds.succeeded == []
    assert stripe_refunds(stripe_base, paid.payment_intent_id) == [(3000, "succeeded")]


def test_a_refund_of_an_invoice_not_paid_through_stripe_waits(conn: psycopg.Connection, gateway: StripeGateway) -> None:
    invoice = issue(conn, "kite", 500)
    conn.execute("UPDATE invoices SET payment_status = 'succeeded' WHERE id = %s", (invoice.id,))  # paid by wire
    note = create_credit_note(conn, invoice.id, idempotency_key="kite-cn", refund_amount_cents=500)
    report = collect(conn, gateway, now=T0)
    assert report.refunds is not None and report.refunds.not_paid_by_stripe == [note.id]
    assert credit_note_refund_status(conn, note.id) == "pending"


_REFUNDER = """
import sys
import psycopg
from invoicing.refunds import refund_credit_notes
from invoicing.stripe_gateway import StripeGateway
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    report = refund_credit_notes(conn, StripeGateway(sys.argv[2], api_base=sys.argv[3]))
print("refunded", len(report.succeeded))
"""


@pytest.mark.parametrize("crash_at", ["before_stripe_refund", "after_stripe_refund"])
def test_a_refunder_killed_around_the_stripe_call_refunds_exactly_once_when_rerun(
    ledger_db: Settings, conn: psycopg.Connection, gateway: StripeGateway, stripe_base: str, crash_at: str
) -> None:
    customer = f"lark-{crash_at}"
    customer_with_card(conn, gateway, customer, GOOD_CARD)
    invoice = issue(conn, customer, 2000)
    collect(conn, gateway, now=T0)
    (paid,) = list_payment_attempts(conn, invoice.id)
    note = create_credit_note(conn, invoice.id, idempotency_key=f"{customer}-cn", refund_amount_cents=2000)
    assert ledger_db.database_url
    command = [sys.executable, "-c", _REFUNDER, ledger_db.database_url, API_KEY, stripe_base]

    crashed = subprocess.run(
        command, env={**os.environ, CRASH_ENV: crash_at}, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120
    )
    assert crashed.returncode == 86, crashed.stderr
    assert credit_note_refund_status(conn, note.id) == "pending"
    expected_at_crash = [(2000, "succeeded")] if crash_at == "after_stripe_refund" else []
    assert stripe_refunds(stripe_base, paid.payment_intent_id or "") == expected_at_crash

    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    rerun = subprocess.run(command, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split() == ["refunded", "1"]
    assert credit_note_refund_status(conn, note.id) == "succeeded"
    assert stripe_refunds(stripe_base, paid.payment_intent_id or "") == [(2000, "succeeded")]
