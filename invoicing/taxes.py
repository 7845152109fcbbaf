"""Tax rates in the ledger and which of them apply to a fee.

A tax (Lago's object: ``code``, ``name``, ``rate`` in percent) is attached to a
billing entity, a customer, a plan, a charge or an add-on. For a fee, the most
specific level that has at least one tax wins and all of that level's taxes apply:
charge (or add-on) → plan → customer → billing entity. A fee with no tax at any level
is untaxed. ``attach_tax`` is idempotent; ``create_tax`` is too when the definition is
unchanged (a changed rate is a new tax code: a rate printed on an issued invoice never
changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import psycopg

from invoicing.contents import TaxRate
from invoicing.errors import CommercialTermsError, IdempotencyConflictError

__all__ = ["TAX_TARGETS", "FeeTaxTarget", "attach_tax", "create_tax", "detach_tax", "resolve_fee_taxes"]

TAX_TARGETS = ("billing_entity", "customer", "plan", "charge", "add_on")


@dataclass(frozen=True)
class FeeTaxTarget:
    """What identifies a fee for tax resolution."""

    charge_id: str | None = None
    add_on_code: str | None = None
    plan_code: str | None = None


def create_tax(
    conn: psycopg.Connection, code: str, name: str, rate: Decimal | str, description: str | None = None
) -> TaxRate:
    """Create the tax, or return it if it exists with the same name and rate."""
    rate = _rate(code, rate)
    if not code:
        raise CommercialTermsError("tax", "code", "must not be empty")
    with conn.transaction():
        conn.execute(
            "INSERT INTO taxes (code, name, rate, description) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (code) DO NOTHING",
            (code, name, rate, description),
        )
        row = conn.execute("SELECT name, rate FROM taxes WHERE code = %s", (code,)).fetchone()
    assert row is not None
    if (row[0], Decimal(row[1])) != (name, rate):
        raise IdempotencyConflictError(
            f"tax {code!r} exists as {row[0]!r} at {row[1]} %; a new rate needs a new code"
        )
    return TaxRate(code, name, rate)


def attach_tax(conn: psycopg.Connection, tax_code: str, target_type: str, target_id: str) -> None:
    """Apply the tax at this level (``billing_entity``, ``customer``, ``plan``, ``charge``, ``add_on``)."""
    if target_type not in TAX_TARGETS:
        raise CommercialTermsError(
            f"tax {tax_code!r}", "target_type", f"must be one of {', '.join(TAX_TARGETS)}; got {target_type!r}"
        )
    with conn.transaction():
        if conn.execute("SELECT 1 FROM taxes WHERE code = %s", (tax_code,)).fetchone() is None:
            raise CommercialTermsError(f"tax {tax_code!r}", "code", "is not a known tax")
        conn.execute(
            "INSERT INTO tax_attachments (tax_code, target_type, target_id) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (tax_code, target_type, target_id),
        )


def detach_tax(conn: psycopg.Connection, tax_code: str, target_type: str, target_id: str) -> bool:
    """Stop applying the tax at this level (issued invoices keep theirs)."""
    cursor = conn.execute(
        "DELETE FROM tax_attachments WHERE tax_code = %s AND target_type = %s AND target_id = %s",
        (tax_code, target_type, target_id),
    )
    return cursor.rowcount == 1


def resolve_fee_taxes(
    conn: psycopg.Connection,
    billing_entity: str,
    external_customer_id: str,
    fees: Sequence[FeeTaxTarget],
) -> list[tuple[TaxRate, ...]]:
    """For each fee, the taxes of its most specific taxed level (in tax-code order)."""
    wanted: set[tuple[str, str]] = {("billing_entity", billing_entity), ("customer", external_customer_id)}
    for fee in fees:
        wanted.update(_fee_levels(fee))
    rows = conn.execute(
        "SELECT a.target_type, a.target_id, t.code, t.name, t.rate"
        " FROM tax_attachments a JOIN taxes t ON t.code = a.tax_code"
        " WHERE (a.target_type, a.target_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        " ORDER BY t.code",
        ([t for t, _ in wanted], [i for _, i in wanted]),
    ).fetchall()
    by_level: dict[tuple[str, str], list[TaxRate]] = {}
    for target_type, target_id, code, name, rate in rows:
        by_level.setdefault((target_type, target_id), []).append(TaxRate(code, name, Decimal(rate)))
    resolved = []
    for fee in fees:
        levels = [*_fee_levels(fee), ("customer", external_customer_id), ("billing_entity", billing_entity)]
        resolved.append(next((tuple(by_level[level]) for level in levels if level in by_level), ()))
    return resolved


def _fee_levels(fee: FeeTaxTarget) -> Iterable[tuple[str, str]]:
    if fee.charge_id:
        yield ("charge", fee.charge_id)
    if fee.add_on_code:
        yield ("add_on", fee.add_on_code)
    if fee.plan_code:
        yield ("plan", fee.plan_code)


def _rate(code: str, rate: Decimal | str) -> Decimal:
    if isinstance(rate, float) or isinstance(rate, bool):
        raise CommercialTermsError(f"tax {code!r}", "rate", "must be a decimal string or Decimal, not float")
    try:
        value = Decimal(rate)
    except Exception as exc:  # decimal.InvalidOperation and friends
        raise CommercialTermsError(f"tax {code!r}", "rate", f"is not a number: {rate!r}") from exc
    if not value.is_finite() or not Decimal(0) <= value <= Decimal(100):
        raise CommercialTermsError(f"tax {code!r}", "rate", f"must be a percentage from 0 to 100, got {rate}")
    return value
