"""Dunning: when a failed payment is retried, when an invoice falls due, overdue marking.

An invoice is due on its ``due_date``, fixed at finalization from the customer's
net payment term (Lago's ``net_payment_term``; 0 = due on its issuing date). A failed
payment is retried ``retry_after_days`` after the FIRST failed attempt (offsets, not
gaps: ``(1, 3, 7)`` retries on days 1, 3 and 7), so a late collector run does not push
later retries back; when every retry has failed the collection is ``exhausted``.

``mark_overdue(conn, now)`` flags every finalized, unpaid invoice whose due date has
passed (it is overdue from the day after the due date, UTC) and enqueues one
``invoice.overdue`` event for it, in one transaction. Overdue and retries are
independent, as in Lago: with the default policy (due on issue) an invoice whose first
charge fails is overdue the next day while retries go on. To retry first and call the
invoice overdue after, set ``net_payment_term_days`` past the last retry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from invoicing.errors import InvoicingError
from invoicing.ledger import find_invoice
from invoicing.outbox import enqueue_event, invoice_payload

__all__ = ["PaymentPolicy", "PaymentPolicyError", "mark_overdue"]


class PaymentPolicyError(InvoicingError, ValueError):
    """A payment policy setting is invalid (field and reason)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"payment policy {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class PaymentPolicy:
    """Retry a failed payment ``retry_after_days`` after the first failure."""

    retry_after_days: tuple[int, ...] = (1, 3, 7)

    def __post_init__(self) -> None:
        days = self.retry_after_days
        if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in days):
            raise PaymentPolicyError("retry_after_days", f"{days!r}: days must be positive integers")
        if list(days) != sorted(set(days)):
            raise PaymentPolicyError("retry_after_days", f"{days!r}: must increase strictly")

    @classmethod
    def from_env(cls) -> PaymentPolicy:
        """``BILLHOUSE_RETRY_AFTER_DAYS``, e.g. ``1,3,7`` (empty: never retry; unset: default)."""
        retry = os.environ.get("BILLHOUSE_RETRY_AFTER_DAYS")
        if retry is None:
            return cls()
        try:
            return cls(tuple(int(d) for d in retry.split(",") if d.strip()))
        except ValueError:
            raise PaymentPolicyError("retry_after_days", f"{retry!r} is not a list of days") from None

    def next_attempt_at(self, first_failed_at: datetime, failed_attempts: int) -> datetime | None:
        """When to try again after ``failed_attempts`` failures; None when retries are spent."""
        if failed_attempts < 1:
            raise ValueError("next_attempt_at() is for a collection with a failed attempt")
        if failed_attempts > len(self.retry_after_days):
            return None
        return first_failed_at + timedelta(days=self.retry_after_days[failed_attempts - 1])


def mark_overdue(conn: psycopg.Connection, now: datetime | None = None) -> list[UUID]:
    """Flag unpaid invoices past their due date; return their ids (newly flagged only)."""
    at = now or datetime.now(UTC)
    with conn.transaction():
        rows = conn.execute(
            """
            UPDATE invoice_collections c SET overdue_at = %s, updated_at = now()
            FROM invoices i
            WHERE i.id = c.invoice_id
              AND c.overdue_at IS NULL
              AND c.state IN ('collecting', 'exhausted')
              AND c.due_date < %s
              AND i.status = 'finalized'
              AND i.payment_status <> 'succeeded'
            RETURNING c.invoice_id, c.due_date, c.amount_due_cents
            """,
            (at, at.astimezone(UTC).date()),
        ).fetchall()
        for invoice_id, due_date, amount_due in rows:
            invoice = find_invoice(conn, id=invoice_id)
            assert invoice is not None
            enqueue_event(
                conn,
                "invoice.overdue",
                {
                    "invoice": invoice_payload(invoice),
                    "due_date": due_date,
                    "amount_due_cents": amount_due,
                    "overdue_at": at,
                },
                invoice_id,
                idempotency_key=f"invoice.overdue:{invoice_id}",
            )
    return [row[0] for row in rows]
