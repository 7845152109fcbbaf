"""Outgoing webhooks: outbox written with the change, signed delivery, retries, dedupe ids.

A real HTTP receiver runs on loopback in this module; a real embedded PostgreSQL
ledger (one server per module, a fresh database per test). Time is passed to
``deliver_webhooks`` so the backoff schedule is checked without sleeping.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from billhouse.ledger_connection import ledger_url, stop_ledger
from billhouse.settings import Settings
from invoicing.credit_notes import create_credit_note
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import CreditNoteExceedsRemainingError
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedInvoice
from invoicing.migrations import migrate
from invoicing.outbox import UnknownEventTypeError, enqueue_event
from invoicing.wallets import create_wallet, top_up_wallet
from invoicing.webhooks import (
    SIGNATURE_HEADER,
    InvalidSignatureError,
    WebhookEndpointError,
    WebhookPolicy,
    add_webhook_endpoint,
    deliver_webhooks,
    disable_webhook_endpoint,
    signature_header,
    verify_signature,
)

from .loopback_servers import Received, Receiver, run_webhook_receiver

SECRET = "whsec_test_0123456789abcdef"


# -- receiver ---------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with run_webhook_receiver() as running:
        yield running


# -- ledger -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("webhooks"))
    ledger_url(settings)
    yield settings
    stop_ledger(settings)


@pytest.fixture
def conn(server_settings: Settings, request: pytest.FixtureRequest) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a fresh, migrated ledger database for this test."""
    server_url = ledger_url(server_settings)
    name = "hooks_" + request.node.name.lower().replace("[", "_").replace("]", "")[:50]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url.replace("/billhouse?", f"/{name}?", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        yield conn


def issue(conn: psycopg.Connection, customer: str, cents: int, key: str | None = None) -> FinalizedInvoice:
    period = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
    fee = DraftFee(
        fee_key=f"{key or customer}/fee",
        kind="charge",
        external_subscription_id=f"sub-{customer}",
        plan_code="startup",
        billable_metric_code="api_calls",
        charge_model="standard",
        invoice_display_name="API calls",
        period_start=period[0],
        period_end=period[1],
        units=Decimal(cents),
        unit_amount=Decimal("0.01"),
        precise_amount=Decimal(cents) / 100,
        amount_cents=cents,
    )
    draft = InvoiceDraft(
        invoice_key=key or f"{customer}/EUR/2025-04-01",
        external_customer_id=customer,
        customer_name=customer.title(),
        currency="EUR",
        currency_exponent=2,
        issuing_date=date(2025, 4, 1),
        period_start=period[0],
        period_end=period[1],
        sub_total_cents=cents,
        total_cents=cents,
        fees=(fee,),
    )
    (invoice,) = finalize_drafts(conn, [draft])
    return invoice


def delivery_states(conn: psycopg.Connection) -> Counter[tuple[str, int]]:
    return Counter(conn.execute("SELECT status, attempts FROM webhook_deliveries").fetchall())


# -- delivery ---------------------------------------------------------------------


def test_each_event_is_delivered_signed_under_one_id_through_two_failures(
    conn: psycopg.Connection, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    endpoint = add_webhook_endpoint(conn, url, secret=SECRET)
    first = issue(conn, "acme", 1234)
    second = issue(conn, "bolt", 500)
    # PART 1's events are enqueued inside its own transactions, like this:
    with conn.transaction():
        credit_note = enqueue_event(
            conn, "credit_note.created", {"credit_note": {"amount_cents": 300}}, "cn-1"
        )
        wallet = enqueue_event(
            conn, "wallet.depleted", {"wallet": {"balance": Decimal("0.00")}}, "wallet-1"
        )
    # an event whose transaction rolls back is never sent
    with pytest.raises(RuntimeError), conn.transaction():
        enqueue_event(conn, "wallet.depleted", {"wallet": {}}, "wallet-2")
        raise RuntimeError("the change failed")
    # re-finalizing the same drafts enqueues nothing more
    issue(conn, "acme", 1234)

    expected_events = {
        (first.id.hex, "invoice.created"), (first.id.hex, "invoice.finalized"),
        (second.id.hex, "invoice.created"), (second.id.hex, "invoice.finalized"),
        ("cn-1", "credit_note.created"), ("wallet-1", "wallet.depleted"),
    }
    policy = WebhookPolicy(max_attempts=5, backoff_base=timedelta(seconds=30))
    T0 = datetime.now(UTC)  # events were enqueued (due) before this instant
    # run at -> deliveries (status, attempts made), by hand: 500, 500, then 200;
    # waits 30 s after the first failure, 60 s after the second.
    runs = [
        (T0, {("pending", 1): 6}),
        (T0 + timedelta(seconds=29), {("pending", 1): 6}),
        (T0 + timedelta(seconds=30), {("pending", 2): 6}),
        (T0 + timedelta(seconds=89), {("pending", 2): 6}),
        (T0 + timedelta(seconds=90), {("delivered", 3): 6}),
        (T0 + timedelta(days=1), {("delivered", 3): 6}),
    ]
    for at, states in runs:
        deliver_webhooks(conn, policy=policy, now=at)
        assert delivery_states(conn) == Counter(states), at

    assert len(state.requests) == 18
    by_id: dict[str, list[Received]] = {}
    for request in state.requests:
        by_id.setdefault(request.headers["billhouse-event-id"], []).append(request)
        verify_signature(endpoint.secret, request.headers[SIGNATURE_HEADER.lower()], request.body)
        with pytest.raises(InvalidSignatureError):
            verify_signature("whsec_another_secret_0000", request.headers[SIGNATURE_HEADER.lower()], request.body)
    assert set(by_id) >= {credit_note, wallet}
    seen = set()
    for event_id, requests in by_id.items():
        assert len(requests) == 3
        assert len({r.body for r in requests}) == 1  # the same bytes on every attempt
        body = json.loads(requests[0].body)
        assert body["id"] == event_id and body["type"] == requests[0].headers["billhouse-event-type"]
        object_id = body["object_id"].replace("-", "") if body["type"].startswith("invoice") else body["object_id"]
        seen.add((object_id, body["type"]))
    assert seen == expected_events
    invoice_event = next(
        json.loads(r[0].body) for r in by_id.values() if json.loads(r[0].body)["type"] == "invoice.finalized"
        and json.loads(r[0].body)["object_id"] == str(first.id)
    )
    assert invoice_event["data"]["invoice"]["number"] == first.number
    assert invoice_event["data"]["invoice"]["total_cents"] == 1234
    wallet_event = json.loads(by_id[wallet][0].body)
    assert wallet_event["data"] == {"wallet": {"balance": "0.00"}}  # Decimal travels as text


def test_a_credit_note_and_the_invoice_that_empties_a_wallet_send_their_events_once(
    conn: psycopg.Connection, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.failures = 1  # every event is refused once, then accepted
    endpoint = add_webhook_endpoint(conn, url, secret=SECRET)
    # wallet of 20 credits at 1 EUR: a 12.34 invoice leaves 7.66, a 10.00 one empties it
    create_wallet(conn, "acme", "EUR", rate_amount="1")
    top_up_wallet(conn, "acme", idempotency_key="acme-topup-1", granted_credits="20")
    first = issue(conn, "acme", 1234)
    assert event_types_of(conn) == ["invoice.created", "invoice.finalized"]  # not depleted yet
    second = issue(conn, "acme", 1000, key="acme/EUR/2025-05-01")
    assert second.total_cents == 234  # 10.00 due, 7.66 taken from the wallet
    assert event_types_of(conn)[2:] == ["wallet.depleted", "invoice.created", "invoice.finalized"]
    third = issue(conn, "acme", 500, key="acme/EUR/2025-06-01")  # empty wallet: nothing taken
    assert third.total_cents == 500
    # 3.00 credited on the first invoice; the same request retried issues nothing more
    note = create_credit_note(conn, first.id, idempotency_key="cn-acme-1", credit_amount_cents=300)
    assert create_credit_note(conn, first.id, idempotency_key="cn-acme-1", credit_amount_cents=300) == note
    # a credit note refused for exceeding the remainder enqueues nothing
    with pytest.raises(CreditNoteExceedsRemainingError):
        create_credit_note(conn, first.id, idempotency_key="cn-acme-2", credit_amount_cents=1000)
    assert event_types_of(conn).count("credit_note.created") == 1
    assert event_types_of(conn).count("wallet.depleted") == 1

    at = datetime.now(UTC)
    deliver_webhooks(conn, now=at)
    deliver_webhooks(conn, now=at + timedelta(minutes=1))
    assert delivery_states(conn) == Counter({("delivered", 2): 8})
    bodies = {}
    for request in state.requests:
        verify_signature(endpoint.secret, request.headers[SIGNATURE_HEADER.lower()], request.body)
        bodies.setdefault(request.headers["billhouse-event-type"], set()).add(request.body)
    assert len(bodies["credit_note.created"]) == 1 and len(bodies["wallet.depleted"]) == 1  # same bytes twice
    (credit_body,) = bodies["credit_note.created"]
    credit_event = json.loads(credit_body)
    assert credit_event["object_id"] == str(note.id)
    assert credit_event["data"]["credit_note"] | {"created_at": None} == {
        "lago_id": str(note.id), "number": f"{first.number}-CN001", "sequential_id": 1,
        "lago_invoice_id": str(first.id), "invoice_number": first.number,
        "external_customer_id": "acme", "currency": "EUR", "reason": "other", "description": None,
        "status": "finalized", "refund_status": None, "total_amount_cents": 300,
        "taxes_amount_cents": 0, "refund_amount_cents": 0, "credit_amount_cents": 300,
        "balance_amount_cents": 300, "created_at": None,
    }
    (wallet_body,) = bodies["wallet.depleted"]
    wallet_event = json.loads(wallet_body)["data"]
    wallet = wallet_event["wallet"]
    assert (wallet["external_customer_id"], wallet["currency"], wallet["balance_cents"]) == ("acme", "EUR", 0)
    assert Decimal(wallet["credits_balance"]) == 0 and Decimal(wallet["consumed_credits"]) == 20
    movement = wallet_event["wallet_transaction"]
    assert (movement["amount_cents"], movement["source"], movement["lago_invoice_id"]) == (766, "invoice", str(second.id))
    assert Decimal(movement["balance_after"]) == 0


def event_types_of(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT event_type FROM webhook_events ORDER BY position")]


def test_an_endpoint_gets_only_the_event_types_it_subscribed_to_from_its_creation(
    conn: psycopg.Connection, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.failures = 0
    issue(conn, "early", 100)  # before any endpoint: nobody gets it
    add_webhook_endpoint(conn, url, secret=SECRET, event_types=["invoice.finalized"])
    issue(conn, "late", 200)
    report = deliver_webhooks(conn)
    assert len(report.delivered) == 1
    assert [r.headers["billhouse-event-type"] for r in state.requests] == ["invoice.finalized"]
    assert json.loads(state.requests[0].body)["data"]["invoice"]["external_customer_id"] == "late"


def test_an_unreachable_endpoint_is_retried_with_backoff_then_given_up(conn: psycopg.Connection) -> None:
    # a port nobody listens on: the connection is refused
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = add_webhook_endpoint(conn, f"http://127.0.0.1:{port}/gone", secret=SECRET)
    event = enqueue_event(conn, "invoice.overdue", {"invoice": {}}, "inv-1")
    policy = WebhookPolicy(max_attempts=4, backoff_base=timedelta(seconds=10), backoff_cap=timedelta(seconds=25))
    # waits by hand: 10 s, 20 s, 25 s (capped), then give up after the 4th attempt
    at = datetime.now(UTC)
    for wait in (timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=25)):
        report = deliver_webhooks(conn, policy=policy, now=at)
        assert report.retrying == [(event, endpoint.id)]
        assert deliver_webhooks(conn, policy=policy, now=at + wait - timedelta(seconds=1)).retrying == []
        at += wait
    report = deliver_webhooks(conn, policy=policy, now=at)
    assert report.failed == [(event, endpoint.id)]
    row = conn.execute("SELECT status, attempts, last_status_code, last_error FROM webhook_deliveries").fetchone()
    assert row is not None and row[:3] == ("failed", 4, None) and "ConnectError" in row[3]
    assert deliver_webhooks(conn, policy=policy, now=at + timedelta(days=1)).failed == []


def test_a_disabled_endpoint_receives_no_new_events(conn: psycopg.Connection, receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    endpoint = add_webhook_endpoint(conn, url, secret=SECRET)
    disable_webhook_endpoint(conn, endpoint.id)
    enqueue_event(conn, "invoice.overdue", {"invoice": {}}, "inv-1")
    assert deliver_webhooks(conn).delivered == [] and state.requests == []


def test_enqueueing_with_an_idempotency_key_twice_records_one_event(conn: psycopg.Connection) -> None:
    first = enqueue_event(conn, "wallet.depleted", {"wallet": {}}, "w-1", idempotency_key="w-1:tx-9")
    again = enqueue_event(conn, "wallet.depleted", {"wallet": {"other": 1}}, "w-1", idempotency_key="w-1:tx-9")
    assert first == again and first.startswith("evt_") and len(first) == 36
    assert conn.execute("SELECT count(*) FROM webhook_events").fetchone() == (1,)


@pytest.mark.parametrize(
    ("event_type", "payload", "error"),
    [
        ("invoice.paid", {}, UnknownEventTypeError),
        ("invoice.overdue", {"amount": 1.5}, TypeError),  # money is never a float
        ("invoice.overdue", {"when": object()}, TypeError),
    ],
)
def test_enqueue_refuses_unknown_types_and_non_json_money(
    conn: psycopg.Connection, event_type: str, payload: dict, error: type[Exception]
) -> None:
    with pytest.raises(error):
        enqueue_event(conn, event_type, payload, "x")
    assert conn.execute("SELECT count(*) FROM webhook_events").fetchone() == (0,)


@pytest.mark.parametrize(
    ("url", "secret", "field_name"),
    [("ftp://example/hook", SECRET, "url"), ("http://127.0.0.1/hook", "short", "secret")],
)
def test_an_endpoint_needs_an_http_url_and_a_long_secret(
    conn: psycopg.Connection, url: str, secret: str, field_name: str
) -> None:
    with pytest.raises(WebhookEndpointError) as error:
        add_webhook_endpoint(conn, url, secret=secret)
    assert error.value.field == field_name


def test_a_generated_secret_is_long_and_random(conn: psycopg.Connection) -> None:
    a = add_webhook_endpoint(conn, "http://127.0.0.1:1/a")
    b = add_webhook_endpoint(conn, "http://127.0.0.1:1/b")
    assert a.secret != b.secret and a.secret.startswith("whsec_") and len(a.secret) == 54


# -- signatures -------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"invoice.finalized"}'
NOW = 1_767_225_600


@pytest.mark.parametrize(
    ("header", "body", "now", "accepted"),
    [
        (signature_header(SECRET, NOW, BODY), BODY, NOW, True),
        (signature_header(SECRET, NOW, BODY), BODY, NOW + 300, True),  # at the tolerance
        (signature_header(SECRET, NOW, BODY), BODY, NOW + 301, False),  # replayed too late
        (signature_header(SECRET, NOW, BODY), BODY, NOW - 301, False),  # from the future
        (signature_header(SECRET, NOW, BODY), BODY + b" ", NOW, False),  # body changed
        (signature_header("whsec_other_secret_00000", NOW, BODY), BODY, NOW, False),
        (signature_header(SECRET, NOW + 1, BODY).replace(f"t={NOW + 1}", f"t={NOW}"), BODY, NOW, False),
        (signature_header(SECRET, NOW, BODY) + ",v1=" + "0" * 64, BODY, NOW, True),  # rotation
        (f"t={NOW},v1=" + "0" * 64 + "," + signature_header(SECRET, NOW, BODY).split(",")[1], BODY, NOW, True),
        (None, BODY, NOW, False),
        ("", BODY, NOW, False),
        (f"t={NOW}", BODY, NOW, False),
        (f"t=soon,v1={'0' * 64}", BODY, NOW, False),
    ],
)
def test_verify_signature_accepts_only_the_signed_body_within_tolerance(
    header: str | None, body: bytes, now: int, accepted: bool
) -> None:
    if accepted:
        assert verify_signature(SECRET, header, body, 300, now=now) == NOW
    else:
        with pytest.raises(InvalidSignatureError):
            verify_signature(SECRET, header, body, 300, now=now)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(1, 30), (2, 60), (3, 120), (4, 240), (10, 15360), (11, 21600), (20, 21600)]
)
def test_backoff_doubles_from_thirty_seconds_up_to_six_hours(attempts: int, seconds: int) -> None:
    assert WebhookPolicy().retry_delay(attempts) == timedelta(seconds=seconds)
