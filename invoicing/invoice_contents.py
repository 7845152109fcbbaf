"""Coupons, taxes and credits of an invoice being finalized: read under lock, then written.

``prepare_invoice_contents`` runs inside the finalizing transaction: it locks the
customer's active applied coupons, credit-note credits and wallet (``FOR UPDATE``, so
two invoices of one customer finalized at once never use the same euro twice),
resolves each fee's taxes and computes the contents (``invoice.contents``).
``record_invoice_contents`` writes what the invoice took — applied coupons and what
is left of them, taxes per fee and per rate, credit-note credits, wallet
consumption — in that same transaction, after the invoice and fee rows.

Coupons discount subscription invoices only (Lago); taxes and credits apply to every
invoice, one-off invoices included.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from invoicing.contents import FeeToInvoice, InvoiceContents, compute_invoice_contents
from invoicing.coupons import lock_coupons_to_apply, record_coupon_uses
from invoicing.customers import get_net_payment_term as net_payment_term
from invoicing.credit_notes import lock_credit_note_credits, record_credit_note_uses
from invoicing.drafts import InvoiceDraft
from invoicing.taxes import FeeTaxTarget, resolve_fee_taxes
from invoicing.wallets import lock_wallet_balance, record_wallet_use

__all__ = ["details_json", "net_payment_term", "prepare_invoice_contents", "record_invoice_contents"]


def prepare_invoice_contents(conn: psycopg.Connection, draft: InvoiceDraft, billing_entity: str) -> InvoiceContents:
    """Lock what the invoice may take from and compute its contents (inside a transaction)."""
    customer = draft.external_customer_id
    rates = resolve_fee_taxes(
        conn,
        billing_entity,
        customer,
        [FeeTaxTarget(fee.charge_id, fee.add_on_code, fee.plan_code) for fee in draft.fees],
    )
    fees = [
        FeeToInvoice(fee.fee_key, fee.amount_cents, taxes)
        for fee, taxes in zip(draft.fees, rates, strict=True)
    ]
    coupons = lock_coupons_to_apply(conn, customer, draft.issuing_date) if draft.invoice_type == "subscription" else []
    credit_notes = lock_credit_note_credits(conn, customer, draft.currency)
    wallet = lock_wallet_balance(conn, customer)
    return compute_invoice_contents(draft.currency, fees, coupons, credit_notes, wallet)


def record_invoice_contents(conn: psycopg.Connection, invoice_id: UUID, contents: InvoiceContents) -> None:
    """Write the contents of a just-inserted invoice (same transaction).

    The fees' own columns (coupon share, taxes) are written with the fees, by
    ``invoicing.finalize``: fees of an issued invoice are insert-only.
    """
    with conn.cursor() as cur:
        rows = [
            (invoice_id, fee.fee_key, rate.code, rate.rate, amount)
            for fee in contents.fees
            for rate, amount in fee.taxes
        ]
        if rows:
            cur.executemany(
                "INSERT INTO fee_applied_taxes (invoice_id, fee_key, tax_code, tax_rate, precise_amount_cents)"
                " VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
        if contents.taxes:
            cur.executemany(
                "INSERT INTO invoice_applied_taxes (invoice_id, tax_code, tax_name, tax_rate,"
                " taxable_base_cents, amount_cents) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (invoice_id, t.tax_code, t.tax_name, t.tax_rate, t.taxable_base_cents, t.amount_cents)
                    for t in contents.taxes
                ],
            )
    record_coupon_uses(conn, invoice_id, contents.coupons)
    record_credit_note_uses(conn, invoice_id, contents.credit_notes)
    if contents.wallet is not None:
        record_wallet_use(conn, invoice_id, contents.wallet)


def details_json(details: dict[str, Any] | None) -> Jsonb | None:
    """A fee's rating details for the jsonb column; Decimals are kept exact as strings."""
    if details is None:
        return None
    return Jsonb(details, dumps=lambda value: json.dumps(value, default=str, sort_keys=True))
