"""Credit notes: corrections of finalized invoices, numbered, never above what remains.

A finalized invoice never changes; a credit note corrects it. Its total splits into a
``refund_amount_cents`` (money back to the payment method, refund_status ``pending``
until the payments module settles it) and a ``credit_amount_cents`` (credit the
customer's next invoices consume, after taxes and before wallet credits — Lago's
credit-note credits). Limits, checked under a lock on the invoice:

- the invoice is ``finalized`` (not voided);
- all its credit notes together never exceed what it was worth:
  sub_total − coupons + taxes (its *creditable* amount);
- refunds together never exceed what was paid by payment method: ``total_cents``
  once ``payment_status`` is ``succeeded``, nothing before.

A request above a limit is refused with ``CreditNoteExceedsRemainingError`` naming the
invoice and the amount that remains. Numbers are ``<invoice number>-CN<nnn>``,
gapless per invoice. ``create_credit_note`` is idempotent by ``idempotency_key`` and
enqueues ``credit_note.created`` (webhook outbox) in the transaction that issues it.
The tax part of a credit note is the invoice's tax share of its total, rounded half-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from invoicing.contents import CreditNoteCredit, CreditNoteUse
from invoicing.errors import (
    CommercialTermsError,
    CreditNoteExceedsRemainingError,
    IdempotencyConflictError,
    InvoiceNotFoundError,
    InvoiceStateError,
)
from invoicing.money import format_minor_units, round_half_up
from invoicing.outbox import enqueue_event

__all__ = [
    "REASONS",
    "CreditNote",
    "CreditableAmounts",
    "create_credit_note",
    "credit_note_payload",
    "creditable_amounts",
    "list_credit_notes",
    "lock_credit_note_credits",
    "record_credit_note_uses",
]

REASONS = (
    "duplicated_charge",
    "product_unsatisfactory",
    "order_change",
    "order_cancellation",
    "fraudulent_charge",
    "other",
)


@dataclass(frozen=True)
class CreditNote:
    id: UUID
    number: str
    sequential_id: int
    invoice_id: UUID
    invoice_number: str
    external_customer_id: str
    currency: str
    reason: str
    description: str | None
    total_amount_cents: int
    taxes_amount_cents: int
    refund_amount_cents: int
    credit_amount_cents: int
    balance_amount_cents: int  # credit left for the next invoices
    refund_status: str | None
    status: str
    created_at: datetime


@dataclass(frozen=True)
class CreditableAmounts:
    invoice_number: str
    currency: str
    creditable_cents: int  # what further credit notes may total
    refundable_cents: int  # what further refunds may total


_COLUMNS = """
    n.id, n.number, n.sequential_id, n.invoice_id, i.number AS invoice_number,
    n.external_customer_id, n.currency, n.reason, n.description, n.total_amount_cents,
    n.taxes_amount_cents, n.refund_amount_cents, n.credit_amount_cents,
    n.balance_amount_cents, n.refund_status, n.status, n.created_at
"""


def create_credit_note(
    conn: psycopg.Connection,
    invoice_id: UUID,
    *,
    idempotency_key: str,
    refund_amount_cents: int = 0,
    credit_amount_cents: int = 0,
    reason: str = "other",
    description: str | None = None,
) -> CreditNote:
    """Issue a credit note on a finalized invoice, in one transaction."""
    for name, value in (("refund_amount_cents", refund_amount_cents), ("credit_amount_cents", credit_amount_cents)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CommercialTermsError("credit note", name, f"must be a non-negative int of minor units, got {value!r}")
    if refund_amount_cents + credit_amount_cents <= 0:
        raise CommercialTermsError("credit note", "refund_amount_cents/credit_amount_cents", "must total more than 0")
    if reason not in REASONS:
        raise CommercialTermsError("credit note", "reason", f"must be one of {', '.join(REASONS)}; got {reason!r}")
    if not idempotency_key:
        raise CommercialTermsError("credit note", "idempotency_key", "is required")
    total = refund_amount_cents + credit_amount_cents
    with conn.transaction():
        invoice = _lock_invoice(conn, invoice_id)
        existing = _load(conn, "n.idempotency_key = %s", (idempotency_key,))
        if existing:
            note = existing[0]
            if (note.invoice_id, note.refund_amount_cents, note.credit_amount_cents) != (
                invoice_id, refund_amount_cents, credit_amount_cents
            ):
                raise IdempotencyConflictError(
                    f"idempotency key {idempotency_key!r} already issued {note.number}"
                    f" (refund {note.refund_amount_cents}, credit {note.credit_amount_cents})"
                )
            return note
        if invoice["status"] != "finalized":
            raise InvoiceStateError(f"invoice {invoice['number']} is {invoice['status']}: it cannot be credited")
        amounts = _creditable(conn, invoice)
        currency = amounts.currency
        if total > amounts.creditable_cents:
            raise CreditNoteExceedsRemainingError(
                amounts.invoice_number, "credit note total", format_minor_units(total, currency),
                format_minor_units(amounts.creditable_cents, currency),
            )
        if refund_amount_cents > amounts.refundable_cents:
            raise CreditNoteExceedsRemainingError(
                amounts.invoice_number, "refund", format_minor_units(refund_amount_cents, currency),
                format_minor_units(amounts.refundable_cents, currency),
            )
        worth = invoice["sub_total_cents"] - invoice["coupons_cents"] + invoice["taxes_cents"]
        taxes = round_half_up(total * invoice["taxes_cents"] / Decimal(worth)) if worth else 0
        row = conn.execute(
            "SELECT coalesce(max(sequential_id), 0) + 1 FROM credit_notes WHERE invoice_id = %s",
            (invoice_id,),
        ).fetchone()
        assert row is not None
        sequential_id = int(row[0])
        conn.execute(
            "INSERT INTO credit_notes (invoice_id, sequential_id, number, idempotency_key,"
            " external_customer_id, currency, reason, description, total_amount_cents,"
            " taxes_amount_cents, refund_amount_cents, credit_amount_cents, balance_amount_cents,"
            " refund_status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                invoice_id, sequential_id, f"{invoice['number']}-CN{sequential_id:03d}",
                idempotency_key, invoice["external_customer_id"], currency, reason, description,
                total, taxes, refund_amount_cents, credit_amount_cents, credit_amount_cents,
                "pending" if refund_amount_cents else None,
            ),
        )
        note = _load(conn, "n.idempotency_key = %s", (idempotency_key,))[0]
        enqueue_event(
            conn, "credit_note.created", {"credit_note": credit_note_payload(note)}, note.id,
            idempotency_key=f"credit_note.created:{note.id}",
        )
        return note


def credit_note_payload(note: CreditNote) -> dict[str, Any]:
    """The ``credit_note`` object of a ``credit_note.created`` event (Lago's field names)."""
    return {
        "lago_id": str(note.id),
        "number": note.number,
        "sequential_id": note.sequential_id,
        "lago_invoice_id": str(note.invoice_id),
        "invoice_number": note.invoice_number,
        "external_customer_id": note.external_customer_id,
        "currency": note.currency,
        "reason": note.reason,
        "description": note.description,
        "status": note.status,
        "refund_status": note.refund_status,
        "total_amount_cents": note.total_amount_cents,
        "taxes_amount_cents": note.taxes_amount_cents,
        "refund_amount_cents": note.refund_amount_cents,
        "credit_amount_cents": note.credit_amount_cents,
        "balance_amount_cents": note.balance_amount_cents,
        "created_at": note.created_at.isoformat(),
    }


def creditable_amounts(conn: psycopg.Connection, invoice_id: UUID) -> CreditableAmounts:
    """What credit notes on this invoice may still total, and refund."""
    with conn.transaction():
        return _creditable(conn, _lock_invoice(conn, invoice_id, lock=False))


def list_credit_notes(
    conn: psycopg.Connection, *, invoice_id: UUID | None = None, external_customer_id: str | None = None
) -> list[CreditNote]:
    """Credit notes of an invoice or of a customer, in issue order."""
    if (invoice_id is None) == (external_customer_id is None):
        raise TypeError("list_credit_notes() takes exactly one of invoice_id, external_customer_id")
    if invoice_id is not None:
        return _load(conn, "n.invoice_id = %s", (invoice_id,))
    return _load(conn, "n.external_customer_id = %s", (external_customer_id,))


def lock_credit_note_credits(
    conn: psycopg.Connection, external_customer_id: str, currency: str
) -> list[CreditNoteCredit]:
    """The customer's credit-note credit left in this currency, oldest first, locked."""
    rows = conn.execute(
        "SELECT id, number, balance_amount_cents FROM credit_notes"
        " WHERE external_customer_id = %s AND currency = %s AND status = 'finalized'"
        " AND balance_amount_cents > 0 ORDER BY created_at, number FOR UPDATE",
        (external_customer_id, currency),
    ).fetchall()
    return [CreditNoteCredit(r[0], r[1], int(r[2])) for r in rows]


def record_credit_note_uses(conn: psycopg.Connection, invoice_id: UUID, uses: tuple[CreditNoteUse, ...]) -> None:
    """Write the credit an invoice consumed and lower each credit note's balance."""
    for use in uses:
        conn.execute(
            "INSERT INTO invoice_credit_note_credits (invoice_id, credit_note_id, amount_cents)"
            " VALUES (%s, %s, %s)",
            (invoice_id, use.credit_note_id, use.amount_cents),
        )
        conn.execute(
            "UPDATE credit_notes SET balance_amount_cents = balance_amount_cents - %s WHERE id = %s",
            (use.amount_cents, use.credit_note_id),
        )


def _lock_invoice(conn: psycopg.Connection, invoice_id: UUID, lock: bool = True) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, number, status, payment_status, external_customer_id, currency,"
            " sub_total_cents, coupons_cents, taxes_cents, total_cents FROM invoices"
            " WHERE id = %s AND status <> 'draft'" + (" FOR UPDATE" if lock else ""),
            (invoice_id,),
        ).fetchone()
    if row is None:
        raise InvoiceNotFoundError(f"no issued invoice with id {invoice_id}")
    row["currency"] = row["currency"].strip()
    return row


def _creditable(conn: psycopg.Connection, invoice: dict[str, Any]) -> CreditableAmounts:
    row = conn.execute(
        "SELECT coalesce(sum(total_amount_cents), 0), coalesce(sum(refund_amount_cents), 0)"
        " FROM credit_notes WHERE invoice_id = %s AND status = 'finalized'",
        (invoice["id"],),
    ).fetchone()
    assert row is not None
    credited, refunded = int(row[0]), int(row[1])
    worth = invoice["sub_total_cents"] - invoice["coupons_cents"] + invoice["taxes_cents"]
    paid = invoice["total_cents"] if invoice["payment_status"] == "succeeded" else 0
    creditable = max(0, worth - credited)
    return CreditableAmounts(
        invoice_number=invoice["number"],
        currency=invoice["currency"],
        creditable_cents=creditable,
        refundable_cents=max(0, min(paid - refunded, creditable)),
    )


def _load(conn: psycopg.Connection, where: str, params: tuple[Any, ...]) -> list[CreditNote]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT {_COLUMNS} FROM credit_notes n JOIN invoices i ON i.id = n.invoice_id"
            f" WHERE {where} ORDER BY n.created_at, n.number".encode(),
            params,
        ).fetchall()
    return [CreditNote(**{**row, "currency": row["currency"].strip()}) for row in rows]
