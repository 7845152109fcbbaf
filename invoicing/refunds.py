"""Refund credit notes to the payment method through Stripe, each at most once.

A credit note with a refund part has ``refund_status = 'pending'`` (see
``invoicing.credit_notes``). ``refund_credit_notes(conn, gateway)`` refunds each such
note against the PaymentIntent that paid its invoice: it commits a
``credit_note_refunds`` row (idempotency key ``billhouse-refund-<credit note id>``)
BEFORE calling Stripe, and a run that finds such a row still ``started`` looks the
refund up in Stripe by that key and only re-sends the same request if Stripe never
saw it. The outcome sets the credit note's ``refund_status`` (succeeded | failed).
``invoicing.payments.collect`` runs it after collecting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from uuid import UUID

import psycopg

from invoicing.payments import crash_point, invoice_lock
from invoicing.stripe_gateway import RefundResult, StripeGateway, StripeGatewayError

__all__ = ["RefundReport", "refund_credit_notes"]

logger = logging.getLogger(__name__)


@dataclass
class RefundReport:
    succeeded: list[UUID] = field(default_factory=list)  # credit note ids
    failed: list[UUID] = field(default_factory=list)
    pending: list[UUID] = field(default_factory=list)  # Stripe has not settled it yet
    not_paid_by_stripe: list[UUID] = field(default_factory=list)
    errors: dict[UUID, str] = field(default_factory=dict)


def refund_credit_notes(conn: psycopg.Connection, gateway: StripeGateway) -> RefundReport:
    """Refund every pending credit-note refund (autocommit connection, no open transaction)."""
    report = RefundReport()
    rows = conn.execute(
        """
        SELECT n.id, n.invoice_id FROM credit_notes n
        WHERE n.refund_status = 'pending' AND n.status = 'finalized'
        ORDER BY n.created_at, n.id
        """
    ).fetchall()
    for credit_note_id, invoice_id in rows:
        try:
            with invoice_lock(conn, invoice_id) as got:
                if got:
                    _refund_one(conn, gateway, credit_note_id, invoice_id, report)
        except StripeGatewayError as exc:
            logger.warning("refunding credit note %s: %s (retried next run)", credit_note_id, exc)
            report.errors[credit_note_id] = str(exc)
    return report


def _refund_one(
    conn: psycopg.Connection,
    gateway: StripeGateway,
    credit_note_id: UUID,
    invoice_id: UUID,
    report: RefundReport,
) -> None:
    with conn.transaction():
        note = conn.execute(
            "SELECT refund_amount_cents, refund_status FROM credit_notes WHERE id = %s FOR UPDATE",
            (credit_note_id,),
        ).fetchone()
        assert note is not None
        amount, refund_status = note
        if refund_status != "pending":
            return
        started = conn.execute(
            "SELECT idempotency_key, payment_intent_id, amount_cents, status FROM credit_note_refunds"
            " WHERE credit_note_id = %s",
            (credit_note_id,),
        ).fetchone()
        if started is None:
            paid = conn.execute(
                "SELECT payment_intent_id FROM payment_attempts"
                " WHERE invoice_id = %s AND status = 'succeeded'",
                (invoice_id,),
            ).fetchone()
            if paid is None or paid[0] is None:
                report.not_paid_by_stripe.append(credit_note_id)
                return
            key = f"billhouse-refund-{credit_note_id}"
            conn.execute(
                "INSERT INTO credit_note_refunds (credit_note_id, idempotency_key,"
                " payment_intent_id, amount_cents) VALUES (%s, %s, %s, %s)",
                (credit_note_id, key, paid[0], amount),
            )
            started = (key, paid[0], amount, "started")
    key, payment_intent_id, amount, _ = started
    found = gateway.find_refund(payment_intent_id=payment_intent_id, idempotency_key=key)
    if found is None:
        crash_point("before_stripe_refund")
        found = gateway.refund(
            payment_intent_id=payment_intent_id,
            amount_cents=amount,
            idempotency_key=key,
            metadata={"billhouse_credit_note_id": str(credit_note_id)},
        )
        crash_point("after_stripe_refund")
    _record(conn, credit_note_id, found, report)


def _record(conn: psycopg.Connection, credit_note_id: UUID, result: RefundResult, report: RefundReport) -> None:
    with conn.transaction():
        if result.status == "pending":
            conn.execute(
                "UPDATE credit_note_refunds SET stripe_refund_id = %s WHERE credit_note_id = %s",
                (result.refund_id, credit_note_id),
            )
            report.pending.append(credit_note_id)
            return
        conn.execute(
            "UPDATE credit_note_refunds SET status = %s, stripe_refund_id = %s, failure_reason = %s,"
            " finished_at = now() WHERE credit_note_id = %s",
            (result.status, result.refund_id, result.failure_reason, credit_note_id),
        )
        conn.execute(
            "UPDATE credit_notes SET refund_status = %s WHERE id = %s", (result.status, credit_note_id)
        )
    (report.succeeded if result.status == "succeeded" else report.failed).append(credit_note_id)
