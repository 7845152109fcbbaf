"""Coupons and the coupons applied to customers, in the ledger.

A coupon (Lago's object) is ``fixed_amount`` (``amount_cents`` in ``amount_currency``)
or ``percentage`` (``percentage_rate`` in percent), with a frequency: ``once``,
``recurring`` for ``frequency_duration`` invoices, or ``forever``. Applying it to a
customer copies its terms (optionally overridden, as Lago allows) into an applied
coupon that tracks what is left. Finalization (``invoicing.invoice_contents``) uses a
customer's active applied coupons oldest first and updates what is left in the same
transaction. A non-reusable coupon is applied at most once per customer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from invoicing.contents import CouponToApply, CouponUse
from invoicing.errors import CommercialTermsError, IdempotencyConflictError

__all__ = [
    "AppliedCoupon",
    "Coupon",
    "apply_coupon",
    "create_coupon",
    "list_applied_coupons",
    "lock_coupons_to_apply",
    "record_coupon_uses",
    "terminate_applied_coupon",
]

COUPON_TYPES = ("fixed_amount", "percentage")
FREQUENCIES = ("once", "recurring", "forever")


@dataclass(frozen=True)
class Coupon:
    code: str
    name: str
    coupon_type: str
    frequency: str
    amount_cents: int | None = None
    amount_currency: str | None = None
    percentage_rate: Decimal | None = None
    frequency_duration: int | None = None
    reusable: bool = False
    expiration_at: datetime | None = None


@dataclass(frozen=True)
class AppliedCoupon:
    id: UUID
    coupon_code: str
    external_customer_id: str
    coupon_type: str
    frequency: str
    amount_cents: int | None
    amount_currency: str | None
    percentage_rate: Decimal | None
    frequency_duration: int | None
    amount_cents_remaining: int | None
    frequency_duration_remaining: int | None
    status: str  # "active" | "terminated"


def create_coupon(conn: psycopg.Connection, coupon: Coupon) -> Coupon:
    """Create the coupon, or return it when one with this code has the same terms."""
    _validate(coupon, f"coupon {coupon.code!r}")
    with conn.transaction():
        conn.execute(
            "INSERT INTO coupons (code, name, coupon_type, amount_cents, amount_currency,"
            " percentage_rate, frequency, frequency_duration, reusable, expiration_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (code) DO NOTHING",
            (
                coupon.code, coupon.name, coupon.coupon_type, coupon.amount_cents,
                coupon.amount_currency, coupon.percentage_rate, coupon.frequency,
                coupon.frequency_duration, coupon.reusable, coupon.expiration_at,
            ),
        )
        existing = _get_coupon(conn, coupon.code)
    if existing != coupon:
        raise IdempotencyConflictError(f"coupon {coupon.code!r} exists with other terms: {existing}")
    return existing


def apply_coupon(
    conn: psycopg.Connection,
    external_customer_id: str,
    coupon_code: str,
    *,
    idempotency_key: str | None = None,
    amount_cents: int | None = None,
    amount_currency: str | None = None,
    percentage_rate: Decimal | None = None,
    frequency: str | None = None,
    frequency_duration: int | None = None,
    at: datetime | None = None,
) -> AppliedCoupon:
    """Apply a coupon to a customer (overrides as in Lago's ``applied_coupon``).

    Idempotent by ``idempotency_key``; for a non-reusable coupon the key defaults to
    customer and coupon, so applying it twice returns the first application.
    """
    with conn.transaction():
        coupon = _get_coupon(conn, coupon_code, lock=True)
        if coupon is None:
            raise CommercialTermsError(f"applied coupon for {external_customer_id!r}", "coupon_code",
                                       f"{coupon_code!r} is not a known coupon")
        if coupon.expiration_at is not None and (at or datetime.now(coupon.expiration_at.tzinfo)) > coupon.expiration_at:
            raise CommercialTermsError(f"coupon {coupon_code!r}", "expiration_at",
                                       f"passed on {coupon.expiration_at:%Y-%m-%d}; it can no longer be applied")
        if idempotency_key is None:
            if coupon.reusable:
                raise CommercialTermsError(f"coupon {coupon_code!r}", "idempotency_key",
                                           "is required to apply a reusable coupon")
            idempotency_key = f"{external_customer_id}/{coupon_code}"
        terms = Coupon(
            code=coupon.code,
            name=coupon.name,
            coupon_type=coupon.coupon_type,
            frequency=frequency or coupon.frequency,
            amount_cents=amount_cents if amount_cents is not None else coupon.amount_cents,
            amount_currency=amount_currency or coupon.amount_currency,
            percentage_rate=percentage_rate if percentage_rate is not None else coupon.percentage_rate,
            frequency_duration=(
                frequency_duration if frequency_duration is not None
                else (coupon.frequency_duration if (frequency or coupon.frequency) == "recurring" else None)
            ),
        )
        _validate(terms, f"applied coupon {coupon_code!r} for {external_customer_id!r}")
        if not coupon.reusable:
            other = conn.execute(
                "SELECT idempotency_key FROM applied_coupons WHERE coupon_code = %s"
                " AND external_customer_id = %s AND idempotency_key <> %s",
                (coupon_code, external_customer_id, idempotency_key),
            ).fetchone()
            if other is not None:
                raise IdempotencyConflictError(
                    f"coupon {coupon_code!r} is not reusable and is already applied to {external_customer_id!r}"
                )
        conn.execute(
            "INSERT INTO applied_coupons (idempotency_key, coupon_code, external_customer_id,"
            " coupon_type, amount_cents, amount_currency, percentage_rate, frequency,"
            " frequency_duration, amount_cents_remaining, frequency_duration_remaining)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (
                idempotency_key, coupon_code, external_customer_id, terms.coupon_type,
                terms.amount_cents, terms.amount_currency, terms.percentage_rate, terms.frequency,
                terms.frequency_duration,
                terms.amount_cents if terms.coupon_type == "fixed_amount" and terms.frequency == "once" else None,
                terms.frequency_duration if terms.frequency == "recurring" else None,
            ),
        )
        applied = _applied(conn, "idempotency_key = %s", (idempotency_key,))[0]
    if (applied.coupon_code, applied.external_customer_id) != (coupon_code, external_customer_id):
        raise IdempotencyConflictError(
            f"idempotency key {idempotency_key!r} already applied coupon {applied.coupon_code!r}"
            f" to {applied.external_customer_id!r}"
        )
    return applied


def list_applied_coupons(
    conn: psycopg.Connection, external_customer_id: str, active_only: bool = False
) -> list[AppliedCoupon]:
    """The customer's applied coupons, oldest first."""
    where = "external_customer_id = %s" + (" AND status = 'active'" if active_only else "")
    return _applied(conn, where, (external_customer_id,))


def terminate_applied_coupon(conn: psycopg.Connection, applied_coupon_id: UUID) -> None:
    """Stop using an applied coupon (invoices already issued keep their discount)."""
    conn.execute(
        "UPDATE applied_coupons SET status = 'terminated', terminated_at = now()"
        " WHERE id = %s AND status = 'active'",
        (applied_coupon_id,),
    )


def lock_coupons_to_apply(
    conn: psycopg.Connection, external_customer_id: str, issuing_date: date
) -> list[CouponToApply]:
    """Active applied coupons of the customer, oldest first, locked until the transaction ends.

    A coupon whose expiration date has passed by the issuing date no longer discounts.
    """
    rows = conn.execute(
        "SELECT a.id, a.coupon_code, c.name, a.coupon_type, a.frequency, a.amount_cents,"
        " a.amount_currency, a.percentage_rate, a.amount_cents_remaining,"
        " a.frequency_duration_remaining"
        " FROM applied_coupons a JOIN coupons c ON c.code = a.coupon_code"
        " WHERE a.external_customer_id = %s AND a.status = 'active'"
        " AND (c.expiration_at IS NULL OR c.expiration_at::date >= %s)"
        " ORDER BY a.position FOR UPDATE OF a",
        (external_customer_id, issuing_date),
    ).fetchall()
    return [
        CouponToApply(
            applied_coupon_id=r[0], coupon_code=r[1], coupon_name=r[2], coupon_type=r[3],
            frequency=r[4], amount_cents=r[5], amount_currency=r[6].strip() if r[6] else None,
            percentage_rate=r[7], amount_cents_remaining=r[8], frequency_duration_remaining=r[9],
        )
        for r in rows
    ]


def record_coupon_uses(conn: psycopg.Connection, invoice_id: UUID, uses: tuple[CouponUse, ...]) -> None:
    """Write what the invoice took from each coupon and what is left of it."""
    for position, use in enumerate(uses):
        conn.execute(
            "INSERT INTO invoice_applied_coupons (invoice_id, applied_coupon_id, coupon_code,"
            " coupon_name, amount_cents, position) VALUES (%s, %s, %s, %s, %s, %s)",
            (invoice_id, use.coupon.applied_coupon_id, use.coupon.coupon_code,
             use.coupon.coupon_name, use.amount_cents, position),
        )
        conn.execute(
            "UPDATE applied_coupons SET amount_cents_remaining = %s,"
            " frequency_duration_remaining = %s,"
            " status = CASE WHEN %s THEN 'terminated' ELSE status END,"
            " terminated_at = CASE WHEN %s THEN now() ELSE terminated_at END"
            " WHERE id = %s",
            (use.amount_cents_remaining, use.frequency_duration_remaining, use.terminated,
             use.terminated, use.coupon.applied_coupon_id),
        )


def _validate(coupon: Coupon, what: str) -> None:
    if not coupon.code:
        raise CommercialTermsError(what, "code", "must not be empty")
    if coupon.coupon_type not in COUPON_TYPES:
        raise CommercialTermsError(what, "coupon_type", f"must be one of {', '.join(COUPON_TYPES)}; got {coupon.coupon_type!r}")
    if coupon.frequency not in FREQUENCIES:
        raise CommercialTermsError(what, "frequency", f"must be one of {', '.join(FREQUENCIES)}; got {coupon.frequency!r}")
    if coupon.coupon_type == "fixed_amount":
        if isinstance(coupon.amount_cents, bool) or not isinstance(coupon.amount_cents, int) or coupon.amount_cents <= 0:
            raise CommercialTermsError(what, "amount_cents", f"must be a positive integer, got {coupon.amount_cents!r}")
        if not coupon.amount_currency or len(coupon.amount_currency) != 3:
            raise CommercialTermsError(what, "amount_currency", "is required for a fixed_amount coupon")
        if coupon.percentage_rate is not None:
            raise CommercialTermsError(what, "percentage_rate", "is for percentage coupons only")
    else:
        rate = coupon.percentage_rate
        if not isinstance(rate, Decimal) or not Decimal(0) < rate <= Decimal(100):
            raise CommercialTermsError(what, "percentage_rate", f"must be a Decimal in (0, 100], got {rate!r}")
        if coupon.amount_cents is not None:
            raise CommercialTermsError(what, "amount_cents", "is for fixed_amount coupons only")
    if coupon.frequency == "recurring":
        if not isinstance(coupon.frequency_duration, int) or coupon.frequency_duration <= 0:
            raise CommercialTermsError(what, "frequency_duration", "must be a positive number of invoices for a recurring coupon")
    elif coupon.frequency_duration is not None:
        raise CommercialTermsError(what, "frequency_duration", "is for recurring coupons only")


def _get_coupon(conn: psycopg.Connection, code: str, lock: bool = False) -> Coupon | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT code, name, coupon_type, frequency, amount_cents, amount_currency,"
            " percentage_rate, frequency_duration, reusable, expiration_at FROM coupons"
            " WHERE code = %s" + (" FOR SHARE" if lock else ""),
            (code,),
        ).fetchone()
    if row is None:
        return None
    row["amount_currency"] = row["amount_currency"].strip() if row["amount_currency"] else None
    return Coupon(**row)


def _applied(conn: psycopg.Connection, where: str, params: tuple[Any, ...]) -> list[AppliedCoupon]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, coupon_code, external_customer_id, coupon_type, frequency, amount_cents,"
            " amount_currency, percentage_rate, frequency_duration, amount_cents_remaining,"
            f" frequency_duration_remaining, status FROM applied_coupons WHERE {where}"
            " ORDER BY position".encode(),
            params,
        ).fetchall()
    for row in rows:
        row["amount_currency"] = row["amount_currency"].strip() if row["amount_currency"] else None
    return [AppliedCoupon(**row) for row in rows]
