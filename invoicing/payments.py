"""Collect finalized invoices through Stripe, each charge made at most once.

``collect(conn, gateway)`` is one collection run. It

1. takes on every finalized invoice it has not seen (``invoice_collections``): the
   amount due and due date are fixed then; nothing due means paid at once;
2. finishes attempts a previous run left open: one that died after recording an
   attempt and before hearing Stripe's answer (``started``) is looked up in Stripe by
   its idempotency key and, only if Stripe never saw it, sent again with the SAME key,
   amount and payment method; an asynchronous one (``processing``) is re-read;
3. charges every collection whose next attempt is due, for the customer's default
   payment method (``stripe_customers``): the attempt row, with its idempotency key
   ``billhouse-<invoice id>-<attempt number>``, is committed BEFORE Stripe is called;
4. marks unpaid invoices past their due date overdue (``invoicing.dunning``);
5. refunds pending credit-note refunds (``invoicing.refunds``).

The outcome of an attempt is written in one transaction with the invoice's payment
status, the next retry (``PaymentPolicy``) and the ``invoice.payment_succeeded`` or
``invoice.payment_failed`` event. A session advisory lock per invoice keeps two
collectors from working on the same invoice; a collector that dies releases it.

The amount due is the invoice's total, which is what is left after coupons, taxes,
credit-note credits and prepaid credits (``amount_due_sql``); the due date is the
invoice's ``due_date``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from invoicing.dunning import PaymentPolicy, mark_overdue
from invoicing.errors import InvoiceNotFoundError, InvoicingError, TransactionStateError
from invoicing.ledger import find_invoice
from invoicing.outbox import enqueue_event, invoice_payload
from invoicing.stripe_gateway import ChargeResult, StripeGateway, StripeGatewayError

if TYPE_CHECKING:
    from invoicing.refunds import RefundReport

__all__ = [
    "CRASH_ENV",
    "Collection",
    "CollectionReport",
    "PaymentAttempt",
    "PaymentSetupError",
    "StripeCustomer",
    "collect",
    "get_collection",
    "get_stripe_customer",
    "invoice_lock",
    "link_stripe_customer",
    "list_payment_attempts",
    "retry_collection",
    "set_default_payment_method",
    "set_up_stripe_customer",
]

logger = logging.getLogger(__name__)

# Test hook: a real crash (os._exit) at a named point of an attempt, to prove recovery.
# Points: "before_stripe_call" (attempt committed, Stripe not called) and
# "after_stripe_call" (Stripe answered, the ledger has not recorded it); the same two
# for refunds: "before_stripe_refund", "after_stripe_refund" (invoicing.refunds).
CRASH_ENV = "BILLHOUSE_CRASH_AT"
CRASH_EXIT_CODE = 86

# How far before an open attempt's start its charge is looked for (clock skew margin).
_LOOKUP_MARGIN = timedelta(hours=1)

# Amount due of invoice alias ``i``: the one definition the collector uses.
amount_due_sql = "i.total_cents"


class PaymentSetupError(InvoicingError):
    """A customer cannot be set up for payments (field and reason)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class StripeCustomer:
    external_customer_id: str
    stripe_customer_id: str
    default_payment_method_id: str | None


@dataclass(frozen=True)
class Collection:
    invoice_id: UUID
    amount_due_cents: int
    currency: str
    due_date: date
    state: str  # collecting | succeeded | exhausted | canceled
    next_attempt_at: datetime | None
    first_failed_at: datetime | None
    overdue_at: datetime | None

    @property
    def overdue(self) -> bool:
        """Flagged overdue and still unpaid."""
        return self.overdue_at is not None and self.state != "succeeded"


@dataclass(frozen=True)
class PaymentAttempt:
    id: UUID
    invoice_id: UUID
    attempt_number: int
    idempotency_key: str
    amount_cents: int
    currency: str
    stripe_customer_id: str
    payment_method_id: str
    status: str  # started | processing | succeeded | failed
    payment_intent_id: str | None
    charge_id: str | None
    failure_code: str | None
    failure_message: str | None
    started_at: datetime
    finished_at: datetime | None


@dataclass
class CollectionReport:
    taken_on: list[UUID] = field(default_factory=list)
    succeeded: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)  # an attempt failed this run
    processing: list[UUID] = field(default_factory=list)
    recovered: list[UUID] = field(default_factory=list)  # an open attempt was finished
    no_payment_method: list[UUID] = field(default_factory=list)
    errors: dict[UUID, str] = field(default_factory=dict)  # Stripe unreachable: retried next run
    overdue: list[UUID] = field(default_factory=list)
    refunds: RefundReport | None = None  # credit-note refunds made by this run


# -- customers --------------------------------------------------------------------


def get_stripe_customer(conn: psycopg.Connection, external_customer_id: str) -> StripeCustomer | None:
    row = conn.execute(
        "SELECT external_customer_id, stripe_customer_id, default_payment_method_id"
        " FROM stripe_customers WHERE external_customer_id = %s",
        (external_customer_id,),
    ).fetchone()
    return StripeCustomer(*row) if row else None


def link_stripe_customer(
    conn: psycopg.Connection,
    external_customer_id: str,
    stripe_customer_id: str,
    default_payment_method_id: str | None = None,
) -> StripeCustomer:
    """Record that a billhouse customer is this existing Stripe customer (no API call)."""
    if not external_customer_id:
        raise PaymentSetupError("external_customer_id", "is empty")
    if not stripe_customer_id.startswith("cus_"):
        raise PaymentSetupError("stripe_customer_id", f"{stripe_customer_id!r} is not a cus_ id")
    with conn.transaction():
        conn.execute(
            """
            INSERT INTO stripe_customers
                (external_customer_id, stripe_customer_id, default_payment_method_id)
            VALUES (%s, %s, %s)
            ON CONFLICT (external_customer_id) DO UPDATE SET
                stripe_customer_id = EXCLUDED.stripe_customer_id,
                default_payment_method_id = coalesce(
                    EXCLUDED.default_payment_method_id, stripe_customers.default_payment_method_id),
                updated_at = now()
            """,
            (external_customer_id, stripe_customer_id, default_payment_method_id),
        )
    customer = get_stripe_customer(conn, external_customer_id)
    assert customer is not None
    return customer


def set_up_stripe_customer(
    conn: psycopg.Connection,
    gateway: StripeGateway,
    external_customer_id: str,
    *,
    name: str | None = None,
    payment_method_id: str | None = None,
) -> StripeCustomer:
    """Create (once) the customer's Stripe customer; attach and default a payment method.

    Safe to repeat: an existing link is reused, and the Stripe customer is created with
    an idempotency key on the external id.
    """
    if not external_customer_id:
        raise PaymentSetupError("external_customer_id", "is empty")
    customer = get_stripe_customer(conn, external_customer_id)
    if customer is None:
        stripe_id = gateway.create_customer(external_customer_id, name)
        customer = link_stripe_customer(conn, external_customer_id, stripe_id)
    if payment_method_id is not None:
        customer = set_default_payment_method(conn, gateway, external_customer_id, payment_method_id)
    return customer


def set_default_payment_method(
    conn: psycopg.Connection,
    gateway: StripeGateway,
    external_customer_id: str,
    payment_method_id: str,
) -> StripeCustomer:
    """Attach the payment method in Stripe and charge it from the next attempt on."""
    customer = get_stripe_customer(conn, external_customer_id)
    if customer is None:
        raise PaymentSetupError(
            "external_customer_id", f"{external_customer_id!r} has no Stripe customer; set it up first"
        )
    gateway.attach_payment_method(customer.stripe_customer_id, payment_method_id)
    with conn.transaction():
        conn.execute(
            "UPDATE stripe_customers SET default_payment_method_id = %s, updated_at = now()"
            " WHERE external_customer_id = %s",
            (payment_method_id, external_customer_id),
        )
    updated = get_stripe_customer(conn, external_customer_id)
    assert updated is not None
    return updated


# -- reading ----------------------------------------------------------------------


def get_collection(conn: psycopg.Connection, invoice_id: UUID) -> Collection | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            """
            SELECT invoice_id, amount_due_cents, currency, due_date, state, next_attempt_at,
                   first_failed_at, overdue_at
            FROM invoice_collections WHERE invoice_id = %s
            """,
            (invoice_id,),
        ).fetchone()
    if row is None:
        return None
    return Collection(**{**row, "currency": row["currency"].strip()})


def list_payment_attempts(conn: psycopg.Connection, invoice_id: UUID) -> list[PaymentAttempt]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT id, invoice_id, attempt_number, idempotency_key, amount_cents, currency,
                   stripe_customer_id, payment_method_id, status, payment_intent_id, charge_id,
                   failure_code, failure_message, started_at, finished_at
            FROM payment_attempts WHERE invoice_id = %s ORDER BY attempt_number
            """,
            (invoice_id,),
        ).fetchall()
    return [PaymentAttempt(**{**r, "currency": r["currency"].strip()}) for r in rows]


def retry_collection(conn: psycopg.Connection, invoice_id: UUID, at: datetime | None = None) -> None:
    """Schedule the next attempt at ``at`` (default now), reopening an exhausted collection.

    For an operator after the customer fixed their payment method.
    """
    with conn.transaction():
        cursor = conn.execute(
            """
            UPDATE invoice_collections SET state = 'collecting',
                next_attempt_at = coalesce(%s, now()), updated_at = now()
            WHERE invoice_id = %s AND state IN ('collecting', 'exhausted')
            """,
            (at, invoice_id),
        )
    if cursor.rowcount != 1:
        raise InvoiceNotFoundError(f"no open or exhausted collection for invoice {invoice_id}")


# -- the collection run -----------------------------------------------------------


def collect(
    conn: psycopg.Connection,
    gateway: StripeGateway,
    *,
    policy: PaymentPolicy = PaymentPolicy(),
    now: datetime | None = None,
) -> CollectionReport:
    """One collection run (see the module docstring); ``now`` defaults to the clock.

    Needs an autocommit connection outside any transaction (each step commits).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE or not conn.autocommit:
        raise TransactionStateError("collect() needs an autocommit connection outside a transaction")
    at = now or datetime.now(UTC)
    report = CollectionReport()
    report.taken_on = _take_on(conn, at)
    _cancel_voided(conn)
    for invoice_id in _open_work(conn, at):
        try:
            _collect_one(conn, gateway, invoice_id, policy, at, report)
        except StripeGatewayError as exc:
            logger.warning("collecting invoice %s: %s (retried next run)", invoice_id, exc)
            report.errors[invoice_id] = str(exc)
    report.overdue = mark_overdue(conn, at)
    from invoicing.refunds import refund_credit_notes  # refunds builds on this module

    report.refunds = refund_credit_notes(conn, gateway)
    return report


def _take_on(conn: psycopg.Connection, at: datetime) -> list[UUID]:
    with conn.transaction():
        rows = conn.execute(
            f"""
            INSERT INTO invoice_collections
                (invoice_id, amount_due_cents, currency, due_date, state, next_attempt_at)
            SELECT i.id, {amount_due_sql}, i.currency, coalesce(i.due_date, i.issuing_date),
                   CASE WHEN {amount_due_sql} > 0 THEN 'collecting' ELSE 'succeeded' END,
                   CASE WHEN {amount_due_sql} > 0 THEN least(i.finalized_at, %s) END
            FROM invoices i
            WHERE i.status = 'finalized' AND i.payment_status = 'pending'
              AND NOT EXISTS (SELECT 1 FROM invoice_collections c WHERE c.invoice_id = i.id)
            ORDER BY i.billing_entity, i.sequential_id
            ON CONFLICT (invoice_id) DO NOTHING
            RETURNING invoice_id, state
            """.encode(),
            (at,),
        ).fetchall()
        paid = [invoice_id for invoice_id, state in rows if state == "succeeded"]
        if paid:
            # Nothing to collect (zero total, fully credited): settled on issue, no charge.
            conn.execute(
                "UPDATE invoices SET payment_status = 'succeeded' WHERE id = ANY(%s)", (paid,)
            )
    return [row[0] for row in rows]


def _cancel_voided(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute(
            """
            UPDATE invoice_collections c SET state = 'canceled', next_attempt_at = NULL,
                updated_at = now()
            FROM invoices i
            WHERE i.id = c.invoice_id AND i.status = 'voided' AND c.state = 'collecting'
            """
        )


def _open_work(conn: psycopg.Connection, at: datetime) -> list[UUID]:
    """Invoices with an attempt left open, then collections due, oldest first."""
    rows = conn.execute(
        """
        SELECT invoice_id FROM (
            SELECT invoice_id, 0 AS rank, started_at AS since FROM payment_attempts
            WHERE status IN ('started', 'processing')
            UNION ALL
            SELECT invoice_id, 1, next_attempt_at FROM invoice_collections
            WHERE state = 'collecting' AND next_attempt_at <= %s
        ) work
        GROUP BY invoice_id ORDER BY min(rank), min(since), invoice_id
        """,
        (at,),
    ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def invoice_lock(conn: psycopg.Connection, invoice_id: UUID) -> Iterator[bool]:
    """A session advisory lock on the invoice's money movements; yields whether we got it.

    Held across the Stripe call (not a transaction); released by unlock or by the
    session ending, so a collector that dies does not keep it."""
    key = f"billhouse-collect:{invoice_id}"
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    got = bool(row and row[0])
    try:
        yield got
    finally:
        if got:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))


def _collect_one(
    conn: psycopg.Connection,
    gateway: StripeGateway,
    invoice_id: UUID,
    policy: PaymentPolicy,
    at: datetime,
    report: CollectionReport,
) -> None:
    with invoice_lock(conn, invoice_id) as got:
        if not got:
            return  # another collector is on it
        open_attempt = _open_attempt(conn, invoice_id)
        if open_attempt is not None:
            result = _finish_open_attempt(gateway, open_attempt)
            if result is None:
                return  # still processing
            _record(conn, open_attempt, result, policy, at, report)
            report.recovered.append(invoice_id)
            return
        attempt = _start_attempt(conn, invoice_id, at, report)
        if attempt is None:
            return
        crash_point("before_stripe_call")
        result = gateway.charge(
            amount_cents=attempt.amount_cents,
            currency=attempt.currency,
            stripe_customer_id=attempt.stripe_customer_id,
            payment_method_id=attempt.payment_method_id,
            idempotency_key=attempt.idempotency_key,
            metadata=_metadata(attempt),
        )
        crash_point("after_stripe_call")
        _record(conn, attempt, result, policy, at, report)


def _open_attempt(conn: psycopg.Connection, invoice_id: UUID) -> PaymentAttempt | None:
    attempts = [a for a in list_payment_attempts(conn, invoice_id) if a.status in ("started", "processing")]
    return attempts[0] if attempts else None


def _finish_open_attempt(gateway: StripeGateway, attempt: PaymentAttempt) -> ChargeResult | None:
    if attempt.status == "processing" and attempt.payment_intent_id:
        result = gateway.retrieve_payment_intent(attempt.payment_intent_id)
        return None if result.status == "processing" else result
    found = gateway.find_payment_intent(
        stripe_customer_id=attempt.stripe_customer_id,
        idempotency_key=attempt.idempotency_key,
        created_after=attempt.started_at - _LOOKUP_MARGIN,
    )
    if found is not None:
        logger.info("attempt %s reached Stripe before the crash: %s", attempt.idempotency_key, found.status)
        return found
    # Stripe never saw it: send the very same request (same key, amount, method).
    return gateway.charge(
        amount_cents=attempt.amount_cents,
        currency=attempt.currency,
        stripe_customer_id=attempt.stripe_customer_id,
        payment_method_id=attempt.payment_method_id,
        idempotency_key=attempt.idempotency_key,
        metadata=_metadata(attempt),
    )


def _start_attempt(
    conn: psycopg.Connection, invoice_id: UUID, at: datetime, report: CollectionReport
) -> PaymentAttempt | None:
    """Commit the next attempt (status 'started') if the collection is due and payable."""
    with conn.transaction():
        row = conn.execute(
            """
            SELECT c.amount_due_cents, c.currency, c.state, c.next_attempt_at,
                   i.external_customer_id, i.status,
                   s.stripe_customer_id, s.default_payment_method_id,
                   (SELECT coalesce(max(attempt_number), 0) FROM payment_attempts a
                    WHERE a.invoice_id = c.invoice_id)
            FROM invoice_collections c
            JOIN invoices i ON i.id = c.invoice_id
            LEFT JOIN stripe_customers s ON s.external_customer_id = i.external_customer_id
            WHERE c.invoice_id = %s
            FOR UPDATE OF c
            """,
            (invoice_id,),
        ).fetchone()
        if row is None:
            return None
        amount, currency, state, next_at, _customer, status, stripe_id, method_id, last = row
        if state != "collecting" or status != "finalized" or next_at is None or next_at > at:
            return None
        if stripe_id is None or method_id is None:
            report.no_payment_method.append(invoice_id)
            return None
        number = last + 1
        key = f"billhouse-{invoice_id}-{number}"
        conn.execute(
            """
            INSERT INTO payment_attempts (invoice_id, attempt_number, idempotency_key,
                amount_cents, currency, stripe_customer_id, payment_method_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            """,
            (invoice_id, number, key, amount, currency, stripe_id, method_id),
        )
    attempts = list_payment_attempts(conn, invoice_id)
    return attempts[-1]


def _record(
    conn: psycopg.Connection,
    attempt: PaymentAttempt,
    result: ChargeResult,
    policy: PaymentPolicy,
    at: datetime,
    report: CollectionReport,
) -> None:
    """Write an attempt's outcome, the invoice's payment status, the schedule and event."""
    invoice_id = attempt.invoice_id
    with conn.transaction():
        if result.status == "processing":
            conn.execute(
                "UPDATE payment_attempts SET status = 'processing', payment_intent_id = %s,"
                " charge_id = %s WHERE id = %s",
                (result.payment_intent_id, result.charge_id, attempt.id),
            )
            report.processing.append(invoice_id)
            return
        conn.execute(
            """
            UPDATE payment_attempts SET status = %s, payment_intent_id = %s, charge_id = %s,
                failure_code = %s, failure_message = %s, finished_at = now()
            WHERE id = %s
            """,
            (
                result.status,
                result.payment_intent_id,
                result.charge_id,
                result.failure_code,
                result.failure_message,
                attempt.id,
            ),
        )
        conn.execute(
            "UPDATE invoices SET payment_status = %s WHERE id = %s", (result.status, invoice_id)
        )
        payment: dict[str, Any] = {
            "attempt_number": attempt.attempt_number,
            "amount_cents": attempt.amount_cents,
            "currency": attempt.currency,
            "payment_intent_id": result.payment_intent_id,
            "charge_id": result.charge_id,
        }
        if result.status == "succeeded":
            conn.execute(
                "UPDATE invoice_collections SET state = 'succeeded', next_attempt_at = NULL,"
                " updated_at = now() WHERE invoice_id = %s",
                (invoice_id,),
            )
            event_type, event_key = "invoice.payment_succeeded", f"invoice.payment_succeeded:{invoice_id}"
            report.succeeded.append(invoice_id)
        else:
            next_at = _schedule_retry(conn, invoice_id, policy, at)
            payment |= {
                "failure_code": result.failure_code,
                "failure_message": result.failure_message,
                "next_attempt_at": next_at,
                "final": next_at is None,
            }
            event_type, event_key = "invoice.payment_failed", f"invoice.payment_failed:{attempt.id}"
            report.failed.append(invoice_id)
        invoice = find_invoice(conn, id=invoice_id)
        assert invoice is not None
        enqueue_event(
            conn,
            event_type,
            {"invoice": invoice_payload(invoice), "payment": payment},
            invoice_id,
            idempotency_key=event_key,
        )
    logger.info("invoice %s attempt %d: %s", invoice_id, attempt.attempt_number, result.status)


def _schedule_retry(
    conn: psycopg.Connection, invoice_id: UUID, policy: PaymentPolicy, at: datetime
) -> datetime | None:
    row = conn.execute(
        """
        UPDATE invoice_collections SET first_failed_at = coalesce(first_failed_at, %s),
            updated_at = now()
        WHERE invoice_id = %s
        RETURNING first_failed_at, state,
            (SELECT count(*) FROM payment_attempts WHERE invoice_id = %s AND status = 'failed')
        """,
        (at, invoice_id, invoice_id),
    ).fetchone()
    assert row is not None
    first_failed_at, state, failed = row
    if state != "collecting":
        return None  # canceled (voided) meanwhile: no retry
    next_at = policy.next_attempt_at(first_failed_at, int(failed))
    conn.execute(
        "UPDATE invoice_collections SET next_attempt_at = %s,"
        " state = CASE WHEN %s::timestamptz IS NULL THEN 'exhausted' ELSE 'collecting' END"
        " WHERE invoice_id = %s",
        (next_at, next_at, invoice_id),
    )
    return next_at


def _metadata(attempt: PaymentAttempt) -> dict[str, str]:
    return {
        "billhouse_invoice_id": str(attempt.invoice_id),
        "billhouse_attempt_number": str(attempt.attempt_number),
    }


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        logging.shutdown()
        os._exit(CRASH_EXIT_CODE)
