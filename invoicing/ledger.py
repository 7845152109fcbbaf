"""Finalized invoices as records read back from the Postgres ledger.

``FinalizedInvoice`` and ``FinalizedFee`` mirror the ``invoices`` and ``invoice_fees``
rows. Timestamps come back in UTC; units and prices as exact ``Decimal``.
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
    "FinalizedFee",
    "FinalizedInvoice",
    "find_invoice",
    "get_invoice",
    "list_invoices",
    "record_pdf_path",
]


@dataclass(frozen=True)
class FinalizedFee:
    fee_key: str
    kind: str
    external_subscription_id: str
    plan_code: str
    billable_metric_code: str | None
    charge_model: str | None
    invoice_display_name: str
    period_start: datetime
    period_end: datetime
    units: Decimal
    unit_amount: Decimal
    precise_amount: Decimal
    amount_cents: int


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


_INVOICE_COLUMNS = """
    id, number, sequential_id, billing_entity, invoice_key, external_customer_id,
    customer_name, currency, currency_exponent, issuing_date, period_start, period_end,
    status, payment_status, sub_total_cents, total_cents, finalized_at, pdf_path
"""
_FEE_COLUMNS = """
    invoice_id, fee_key, kind, external_subscription_id, plan_code, billable_metric_code,
    charge_model, invoice_display_name, period_start, period_end, units, unit_amount,
    precise_amount, amount_cents
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
        )
        for row in rows
    ]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
