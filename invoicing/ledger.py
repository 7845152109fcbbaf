"""Finalized invoices as records read back from the Postgres ledger.

``FinalizedInvoice`` and ``FinalizedFee`` mirror the ``invoices`` and ``invoice_fees``
rows, with what the invoice took at finalization: coupons, taxes per rate, credit-note
credits and prepaid credits. Totals follow semantics.md's order::

    sub_total_cents - coupons_cents + taxes_cents - credits_cents = total_cents (due)

where ``credits_cents = credit_notes_cents + prepaid_credits_cents``. Timestamps come
back in UTC; units, prices and unrounded amounts as exact ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from os import PathLike
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from invoicing.errors import InvoiceNotFoundError

__all__ = [
    "AppliedCouponLine",
    "AppliedTaxLine",
    "CreditNoteCreditLine",
    "FinalizedFee",
    "FinalizedInvoice",
    "find_invoice",
    "get_invoice",
    "list_invoices",
    "record_pdf_path",
]


@dataclass(frozen=True)
class AppliedCouponLine:
    coupon_code: str
    coupon_name: str
    amount_cents: int


@dataclass(frozen=True)
class AppliedTaxLine:
    tax_code: str
    tax_name: str
    tax_rate: Decimal  # percent
    taxable_base_cents: int
    amount_cents: int


@dataclass(frozen=True)
class CreditNoteCreditLine:
    credit_note_number: str
    amount_cents: int


@dataclass(frozen=True)
class FinalizedFee:
    fee_key: str
    kind: str  # subscription | charge | commitment | add_on
    external_subscription_id: str | None
    plan_code: str | None
    billable_metric_code: str | None
    charge_model: str | None
    invoice_display_name: str
    period_start: datetime
    period_end: datetime
    units: Decimal
    unit_amount: Decimal
    precise_amount: Decimal
    amount_cents: int
    charge_id: str | None = None
    add_on_code: str | None = None
    details: dict[str, Any] | None = None  # rating details; graduated fees list "tiers"
    precise_coupons_amount_cents: Decimal = Decimal(0)  # unrounded share of the coupons
    precise_taxes_amount_cents: Decimal = Decimal(0)  # unrounded taxes on (fee - coupons)


@dataclass(frozen=True)
class FinalizedInvoice:
    id: UUID
    number: str
    sequential_id: int
    billing_entity: str
    invoice_key: str
    external_customer_id: str
    customer_name: str
    currency: str
    currency_exponent: int
    issuing_date: date
    period_start: datetime
    period_end: datetime
    status: str  # "finalized" | "voided"
    payment_status: str  # "pending" | "succeeded" | "failed"
    sub_total_cents: int
    total_cents: int
    finalized_at: datetime
    pdf_path: str | None
    fees: tuple[FinalizedFee, ...]
    created: bool = False  # True only when returned by the call that finalized it
    invoice_type: str = "subscription"  # "subscription" | "one_off"
    due_date: date | None = None
    coupons_cents: int = 0
    taxes_cents: int = 0
    credit_notes_cents: int = 0  # credit-note credits consumed
    prepaid_credits_cents: int = 0  # wallet credits consumed, as money
    prepaid_credits: Decimal = Decimal(0)  # wallet credits consumed, in credits
    applied_coupons: tuple[AppliedCouponLine, ...] = ()
    applied_taxes: tuple[AppliedTaxLine, ...] = ()
    credit_note_credits: tuple[CreditNoteCreditLine, ...] = ()

    @property
    def credits_cents(self) -> int:
        """Credit-note and prepaid credits together (the scenario output's credits_cents)."""
        return self.credit_notes_cents + self.prepaid_credits_cents

    @property
    def sub_total_after_coupons_cents(self) -> int:
        return self.sub_total_cents - self.coupons_cents

    @property
    def total_before_credits_cents(self) -> int:
        """What the invoice is worth: subtotal - coupons + taxes (the creditable base)."""
        return self.sub_total_cents - self.coupons_cents + self.taxes_cents


_INVOICE_COLUMNS = """
    id, number, sequential_id, billing_entity, invoice_key, external_customer_id,
    customer_name, currency, currency_exponent, issuing_date, period_start, period_end,
    status, payment_status, sub_total_cents, total_cents, finalized_at, pdf_path,
    invoice_type, due_date, coupons_cents, taxes_cents, credit_notes_cents,
    prepaid_credits_cents
"""
_FEE_COLUMNS = """
    invoice_id, fee_key, kind, external_subscription_id, plan_code, billable_metric_code,
    charge_model, invoice_display_name, period_start, period_end, units, unit_amount,
    precise_amount, amount_cents, charge_id, add_on_code, details,
    precise_coupons_amount_cents, precise_taxes_amount_cents
"""


def list_invoices(
    conn: psycopg.Connection, billing_entity: str | None = None
) -> list[FinalizedInvoice]:
    """Issued invoices (finalized or voided), by billing entity then number."""
    where = "status <> 'draft'"
    params: tuple[Any, ...] = ()
    if billing_entity is not None:
        where += " AND billing_entity = %s"
        params = (billing_entity,)
    return _load(
        conn,
        f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE {where}"
        " ORDER BY billing_entity, sequential_id",
        params,
    )


def get_invoice(
    conn: psycopg.Connection,
    *,
    id: UUID | None = None,
    number: str | None = None,
    invoice_key: str | None = None,
) -> FinalizedInvoice:
    """The issued invoice with this id, number or invoice_key (exactly one of them)."""
    keys = (("id", id), ("number", number), ("invoice_key", invoice_key))
    given = {name: value for name, value in keys if value is not None}
    if len(given) != 1:
        raise TypeError("get_invoice() takes exactly one of id, number, invoice_key")
    found = find_invoice(conn, **given)
    if found is None:
        raise InvoiceNotFoundError(f"no issued invoice with {given}")
    return found


def find_invoice(conn: psycopg.Connection, **key: Any) -> FinalizedInvoice | None:
    """Like ``get_invoice`` but None when absent (one keyword: id, number, invoice_key)."""
    ((column, value),) = key.items()
    if column not in ("id", "number", "invoice_key"):
        raise TypeError(f"unknown invoice key {column!r}")
    found = _load(
        conn,
        f"SELECT {_INVOICE_COLUMNS} FROM invoices WHERE {column} = %s AND status <> 'draft'",
        (value,),
    )
    return found[0] if found else None


def record_pdf_path(conn: psycopg.Connection, invoice_id: UUID, path: str | PathLike[str]) -> None:
    """Store where the invoice's PDF was written."""
    cursor = conn.execute(
        "UPDATE invoices SET pdf_path = %s WHERE id = %s", (str(Path(path)), invoice_id)
    )
    if cursor.rowcount != 1:
        raise InvoiceNotFoundError(f"no invoice with id {invoice_id}")


def _load(conn: psycopg.Connection, query: str, params: Sequence[Any]) -> list[FinalizedInvoice]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query.encode(), params).fetchall()
        if not rows:
            return []
        cur.execute(
            f"SELECT {_FEE_COLUMNS} FROM invoice_fees WHERE invoice_id = ANY(%s)"
            " ORDER BY invoice_id, position".encode(),
            ([r["id"] for r in rows],),
        )
        fees: dict[UUID, list[FinalizedFee]] = {}
        for fee in cur.fetchall():
            invoice_id = fee.pop("invoice_id")
            fee["period_start"] = _utc(fee["period_start"])
            fee["period_end"] = _utc(fee["period_end"])
            fees.setdefault(invoice_id, []).append(FinalizedFee(**fee))
        ids = ([r["id"] for r in rows],)
        coupons: dict[UUID, list[AppliedCouponLine]] = {}
        for line in cur.execute(
            b"SELECT invoice_id, coupon_code, coupon_name, amount_cents FROM invoice_applied_coupons"
            b" WHERE invoice_id = ANY(%s) ORDER BY invoice_id, position",
            ids,
        ).fetchall():
            coupons.setdefault(line.pop("invoice_id"), []).append(AppliedCouponLine(**line))
        taxes: dict[UUID, list[AppliedTaxLine]] = {}
        for line in cur.execute(
            b"SELECT invoice_id, tax_code, tax_name, tax_rate, taxable_base_cents, amount_cents"
            b" FROM invoice_applied_taxes WHERE invoice_id = ANY(%s) ORDER BY invoice_id, tax_rate DESC, tax_code",
            ids,
        ).fetchall():
            taxes.setdefault(line.pop("invoice_id"), []).append(AppliedTaxLine(**line))
        credits: dict[UUID, list[CreditNoteCreditLine]] = {}
        for line in cur.execute(
            b"SELECT c.invoice_id, n.number AS credit_note_number, c.amount_cents"
            b" FROM invoice_credit_note_credits c JOIN credit_notes n ON n.id = c.credit_note_id"
            b" WHERE c.invoice_id = ANY(%s) ORDER BY c.invoice_id, n.created_at, n.number",
            ids,
        ).fetchall():
            credits.setdefault(line.pop("invoice_id"), []).append(CreditNoteCreditLine(**line))
        wallet_credits: dict[UUID, Decimal] = {
            line["invoice_id"]: line["credits"]
            for line in cur.execute(
                b"SELECT invoice_id, credits FROM wallet_transactions"
                b" WHERE invoice_id = ANY(%s) AND source = 'invoice'",
                ids,
            ).fetchall()
        }
    return [
        FinalizedInvoice(
            **{
                **row,
                "currency": row["currency"].strip(),
                "period_start": _utc(row["period_start"]),
                "period_end": _utc(row["period_end"]),
                "finalized_at": _utc(row["finalized_at"]),
            },
            fees=tuple(fees.get(row["id"], ())),
            prepaid_credits=wallet_credits.get(row["id"], Decimal(0)),
            applied_coupons=tuple(coupons.get(row["id"], ())),
            applied_taxes=tuple(taxes.get(row["id"], ())),
            credit_note_credits=tuple(credits.get(row["id"], ())),
        )
        for row in rows
    ]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
