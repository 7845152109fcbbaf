"""Invoice life cycle after finalization: voiding.

Status moves draft → finalized → voided and never back (the ledger's trigger refuses
anything else); payment status pending → succeeded | failed is driven by the payments
module. ``void_invoice`` voids a finalized invoice that has not been paid and has no
credit note (a paid invoice is corrected with a credit note instead). Voiding gives
back, in the same transaction, what the invoice consumed: its prepaid credits return
to the wallet (a balance-history row) and its credit-note credits to their credit
notes. Coupon use is not given back (as in Lago). The number stays taken. Voiding a
voided invoice returns it unchanged.
"""

from __future__ import annotations

from uuid import UUID

import psycopg

from invoicing.errors import InvoiceNotFoundError, InvoiceStateError
from invoicing.ledger import FinalizedInvoice, get_invoice

__all__ = ["void_invoice"]


def void_invoice(conn: psycopg.Connection, invoice_id: UUID) -> FinalizedInvoice:
    with conn.transaction():
        row = conn.execute(
            "SELECT number, status, payment_status FROM invoices WHERE id = %s AND status <> 'draft' FOR UPDATE",
            (invoice_id,),
        ).fetchone()
        if row is None:
            raise InvoiceNotFoundError(f"no issued invoice with id {invoice_id}")
        number, status, payment_status = row
        if status == "voided":
            return get_invoice(conn, id=invoice_id)
        if payment_status == "succeeded":
            raise InvoiceStateError(f"invoice {number} is paid: issue a credit note instead of voiding it")
        notes = conn.execute(
            "SELECT count(*) FROM credit_notes WHERE invoice_id = %s AND status = 'finalized'", (invoice_id,)
        ).fetchone()
        if notes and notes[0]:
            raise InvoiceStateError(f"invoice {number} has credit notes and cannot be voided")
        conn.execute("UPDATE invoices SET status = 'voided', voided_at = now() WHERE id = %s", (invoice_id,))
        for credit_note_id, amount in conn.execute(
            "SELECT credit_note_id, amount_cents FROM invoice_credit_note_credits WHERE invoice_id = %s",
            (invoice_id,),
        ).fetchall():
            conn.execute(
                "UPDATE credit_notes SET balance_amount_cents = balance_amount_cents + %s WHERE id = %s",
                (amount, credit_note_id),
            )
        used = conn.execute(
            "SELECT wallet_id, credits, amount_cents FROM wallet_transactions"
            " WHERE invoice_id = %s AND source = 'invoice'",
            (invoice_id,),
        ).fetchone()
        if used is not None:
            wallet_id, credits, amount_cents = used
            balance = conn.execute(
                "UPDATE wallets SET credits_balance = credits_balance + %s,"
                " consumed_credits = consumed_credits - %s, updated_at = now()"
                " WHERE id = %s RETURNING credits_balance",
                (credits, credits, wallet_id),
            ).fetchone()
            assert balance is not None
            conn.execute(
                "INSERT INTO wallet_transactions (wallet_id, idempotency_key, transaction_type, source,"
                " credits, amount_cents, balance_after, invoice_id)"
                " VALUES (%s, %s, 'inbound', 'invoice_voided', %s, %s, %s, %s)",
                (wallet_id, f"invoice_voided/{invoice_id}", credits, amount_cents, balance[0], invoice_id),
            )
        return get_invoice(conn, id=invoice_id)
