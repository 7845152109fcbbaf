"""Finalize warehouse invoice drafts into the ledger, exactly once.

Each draft is finalized in its own transaction: lock the billing entity's number
sequence, return the existing invoice if one has the draft's ``invoice_key`` (so
re-running a close creates nothing and changes no number), otherwise take the next
number (see ``invoicing.numbering``) and insert the invoice and its fees. A failure
rolls the whole draft back, number included; drafts finalized before it stay
committed, and the error is raised.

The invoice's coupons, taxes and credits (``invoicing.invoice_contents``) are computed
and written in that same transaction, under locks on what they consume.

A finalized invoice never changes: a re-run with a different draft for the same
``invoice_key`` returns the invoice as issued (and logs a warning); corrections are
credit notes. A re-drafted invoice whose periods had late usage since is re-rated with
it; that difference was billed as adjustments on later invoices (or is on one of this
close's drafts), so it is not reported as one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from invoicing.drafts import ADJUSTMENT_KEY, InvoiceDraft, adjusted_fee_key
from invoicing.invoice_contents import (
    details_json,
    net_payment_term,
    prepare_invoice_contents,
    record_invoice_contents,
)
from invoicing.errors import (
    FeeAlreadyBilledError,
    InvalidDraftError,
    InvoiceKeyConflictError,
    TransactionStateError,
)
from invoicing.ledger import FinalizedFee, FinalizedInvoice, find_invoice, list_invoices
from invoicing.money import currency_exponent
from invoicing.numbering import issue_next_number, lock_sequence
from invoicing.outbox import enqueue_invoice_finalized_events

__all__ = ["FinalizedFee", "FinalizedInvoice", "finalize_drafts", "list_invoices", "validate_draft"]

logger = logging.getLogger(__name__)

_FEE_BILLED_ONCE = "invoice_fees_fee_key_billed_once"


def finalize_drafts(
    conn: psycopg.Connection,
    drafts: Iterable[InvoiceDraft],
    billing_entity: str = "default",
    prefix: str = "BH",
) -> list[FinalizedInvoice]:
    """Finalize each draft in its own transaction; return the invoices in draft order.

    ``created`` tells a newly finalized invoice from one that already existed. Needs a
    connection outside any transaction (``billhouse.ledger_connection.connect`` gives
    autocommit ones).
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise TransactionStateError("finalize_drafts() runs its own transactions; commit first")
    drafts = list(drafts)
    drafted_adjustments = {
        fee.fee_key: fee.amount_cents for draft in drafts for fee in draft.fees if fee.kind == "adjustment"
    }
    return [_finalize_one(conn, draft, billing_entity, prefix, drafted_adjustments) for draft in drafts]


def validate_draft(draft: InvoiceDraft) -> None:
    """Raise ``InvalidDraftError`` unless the draft is consistent and exact."""

    def fail(reason: str) -> InvalidDraftError:
        return InvalidDraftError(f"draft {draft.invoice_key!r}: {reason}")

    if not draft.invoice_key:
        raise fail("empty invoice_key")
    if draft.currency_exponent != currency_exponent(draft.currency):
        raise fail(
            f"currency_exponent {draft.currency_exponent} but ISO 4217 says"
            f" {currency_exponent(draft.currency)} for {draft.currency}"
        )
    for name in ("sub_total_cents", "total_cents"):
        value = getattr(draft, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"{name} must be int minor units, got {type(value).__name__}")
    if _utc(draft.period_start) > _utc(draft.period_end):
        raise fail("period_start is after period_end")
    keys = [fee.fee_key for fee in draft.fees]
    if len(set(keys)) != len(keys):
        raise fail("the same fee_key appears twice")
    for fee in draft.fees:
        if not fee.fee_key:
            raise fail("a fee has an empty fee_key")
        for name in ("units", "unit_amount", "precise_amount"):
            if not isinstance(getattr(fee, name), Decimal):
                raise fail(f"fee {fee.fee_key!r}: {name} must be Decimal")
        if isinstance(fee.amount_cents, bool) or not isinstance(fee.amount_cents, int):
            raise fail(f"fee {fee.fee_key!r}: amount_cents must be int")
    fees_cents = sum(fee.amount_cents for fee in draft.fees)
    if fees_cents != draft.sub_total_cents:
        raise fail(f"sub_total_cents {draft.sub_total_cents} != sum of fees {fees_cents}")
    # A draft's total is its subtotal: coupons, taxes and credits are applied at finalization.
    if draft.total_cents != draft.sub_total_cents:
        raise fail(f"total_cents {draft.total_cents} != sub_total_cents {draft.sub_total_cents}")


def _finalize_one(
    conn: psycopg.Connection,
    draft: InvoiceDraft,
    billing_entity: str,
    prefix: str,
    drafted_adjustments: dict[str, int],
) -> FinalizedInvoice:
    # Re-runs are the common case: answer them without queueing on the sequence lock.
    # (In a transaction block too, so a non-autocommit connection is left idle.)
    with conn.transaction():
        existing = find_invoice(conn, invoice_key=draft.invoice_key)
    if existing is not None:
        return _already_finalized(conn, existing, draft, billing_entity, drafted_adjustments)
    validate_draft(draft)
    try:
        with conn.transaction():
            sequence = lock_sequence(conn, billing_entity, prefix)
            # Under the lock: a concurrent finalization of this key has committed or not.
            existing = find_invoice(conn, invoice_key=draft.invoice_key)
            if existing is not None:
                return _already_finalized(conn, existing, draft, billing_entity, drafted_adjustments)
            sequential_id, number = issue_next_number(conn, sequence)
            _insert(conn, draft, billing_entity, sequential_id, number)
            invoice = find_invoice(conn, invoice_key=draft.invoice_key)
            assert invoice is not None
            # webhooks: invoice.created + invoice.finalized, committed with the invoice
            enqueue_invoice_finalized_events(conn, invoice)
    except pg_errors.UniqueViolation as exc:
        if exc.diag.constraint_name == _FEE_BILLED_ONCE:
            raise FeeAlreadyBilledError(draft.invoice_key, exc.diag.message_detail or "") from exc
        raise
    assert invoice is not None
    logger.info("finalized %s (%s)", invoice.number, invoice.invoice_key)
    return replace(invoice, created=True)


def _insert(
    conn: psycopg.Connection,
    draft: InvoiceDraft,
    billing_entity: str,
    sequential_id: int,
    number: str,
) -> None:
    contents = prepare_invoice_contents(conn, draft, billing_entity)
    fee_contents = {fee.fee_key: fee for fee in contents.fees}
    due_date = draft.issuing_date + timedelta(days=net_payment_term(conn, draft.external_customer_id))
    row = conn.execute(
        """
        INSERT INTO invoices (
            billing_entity, sequential_id, number, invoice_key, external_customer_id,
            customer_name, currency, currency_exponent, issuing_date, period_start,
            period_end, status, payment_status, sub_total_cents, total_cents, finalized_at,
            invoice_type, due_date, coupons_cents, taxes_cents, credit_notes_cents,
            prepaid_credits_cents
        ) VALUES (
            %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'finalized', 'pending', %s, %s, now(),
            %s, %s, %s, %s, %s, %s
        ) RETURNING id
        """,
        (
            billing_entity,
            sequential_id,
            number,
            draft.invoice_key,
            draft.external_customer_id,
            draft.customer_name,
            draft.currency,
            draft.currency_exponent,
            draft.issuing_date,
            _utc(draft.period_start),
            _utc(draft.period_end),
            contents.sub_total_cents,
            contents.total_cents,
            draft.invoice_type,
            due_date,
            contents.coupons_cents,
            contents.taxes_cents,
            contents.credit_notes_cents,
            contents.prepaid_credits_cents,
        ),
    ).fetchone()
    assert row is not None
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO invoice_fees (
                invoice_id, fee_key, kind, external_subscription_id, plan_code,
                billable_metric_code, charge_model, invoice_display_name, period_start,
                period_end, units, unit_amount, precise_amount, amount_cents, position,
                charge_id, add_on_code, details, precise_coupons_amount_cents,
                precise_taxes_amount_cents
            ) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            [
                (
                    row[0],
                    fee.fee_key,
                    fee.kind,
                    fee.external_subscription_id,
                    fee.plan_code,
                    fee.billable_metric_code,
                    fee.charge_model,
                    fee.invoice_display_name,
                    _utc(fee.period_start),
                    _utc(fee.period_end),
                    fee.units,
                    fee.unit_amount,
                    fee.precise_amount,
                    fee.amount_cents,
                    position,
                    fee.charge_id,
                    fee.add_on_code,
                    details_json(fee.details),
                    fee_contents[fee.fee_key].precise_coupons_amount_cents,
                    fee_contents[fee.fee_key].precise_taxes_amount_cents,
                )
                for position, fee in enumerate(draft.fees)
            ],
        )
    record_invoice_contents(conn, row[0], contents)


def _already_finalized(
    conn: psycopg.Connection,
    existing: FinalizedInvoice,
    draft: InvoiceDraft,
    billing_entity: str,
    drafted_adjustments: dict[str, int],
) -> FinalizedInvoice:
    if existing.billing_entity != billing_entity:
        raise InvoiceKeyConflictError(
            f"invoice_key {draft.invoice_key!r} is {existing.number} of billing entity"
            f" {existing.billing_entity!r}, not {billing_entity!r}"
        )
    fee_keys = {f.fee_key for f in existing.fees}
    if fee_keys != {f.fee_key for f in draft.fees}:
        logger.warning(
            "draft %s differs from finalized invoice %s (other fees); the invoice stays as issued",
            draft.invoice_key,
            existing.number,
        )
    elif existing.sub_total_cents != draft.sub_total_cents:
        adjusted = existing.sub_total_cents + sum(late_adjustments(conn, fee_keys, drafted_adjustments).values())
        if adjusted != draft.sub_total_cents:
            logger.warning(
                "draft %s differs from finalized invoice %s (sub-total %s, %s with its late-usage"
                " adjustments, re-drafted %s); the invoice stays as issued",
                draft.invoice_key,
                existing.number,
                existing.sub_total_cents,
                adjusted,
                draft.sub_total_cents,
            )
    return existing


def late_adjustments(
    conn: psycopg.Connection, fee_keys: set[str], drafted_adjustments: dict[str, int]
) -> dict[str, int]:
    """The late-usage adjustments of ``fee_keys`` (key: amount in minor units), finalized in
    the ledger or on a draft of this close (the same adjustment counts once)."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT fee_key, amount_cents FROM invoice_fees"
            " WHERE kind = 'adjustment' AND split_part(fee_key, %s, 1) = ANY(%s)",
            (ADJUSTMENT_KEY, sorted(fee_keys)),
        ).fetchall()
    adjustments = {
        key: cents for key, cents in drafted_adjustments.items() if adjusted_fee_key(key) in fee_keys
    }
    adjustments.update({key: cents for key, cents in rows})
    return adjustments


def _utc(value: datetime) -> datetime:
    """Drafts carry UTC instants; a naive datetime is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
