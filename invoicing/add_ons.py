"""Add-ons and one-off invoices: items sold once, invoiced on their own.

An add-on (Lago's object) has a ``code``, a ``name`` and a default ``amount_cents`` in
its currency. ``create_one_off_invoice`` bills one or more add-ons to a customer on an
invoice of their own (``invoice_type = 'one_off'``, fee kind ``add_on``), finalized and
numbered like any other invoice. Coupons do not apply to one-off invoices (Lago's
coupons discount subscription invoices); taxes (add-on → customer → billing entity),
credit-note credits and prepaid credits do. The caller's ``idempotency_key`` is the
invoice key: a retried call returns the invoice already issued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

import psycopg

from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import CommercialTermsError, IdempotencyConflictError
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedInvoice
from invoicing.money import currency_exponent, round_half_up

__all__ = ["AddOn", "AddOnLine", "create_add_on", "create_one_off_invoice", "get_add_on"]


@dataclass(frozen=True)
class AddOn:
    code: str
    name: str
    amount_cents: int
    amount_currency: str
    invoice_display_name: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class AddOnLine:
    """One add-on on a one-off invoice; ``unit_amount_cents`` overrides the add-on's price."""

    add_on_code: str
    units: Decimal = Decimal(1)
    unit_amount_cents: int | None = None
    invoice_display_name: str | None = None


def create_add_on(conn: psycopg.Connection, add_on: AddOn) -> AddOn:
    """Create the add-on, or return it when one with this code has the same terms."""
    currency_exponent(add_on.amount_currency)
    if not add_on.code:
        raise CommercialTermsError("add-on", "code", "must not be empty")
    if isinstance(add_on.amount_cents, bool) or not isinstance(add_on.amount_cents, int) or add_on.amount_cents < 0:
        raise CommercialTermsError(f"add-on {add_on.code!r}", "amount_cents", "must be a non-negative integer")
    with conn.transaction():
        conn.execute(
            "INSERT INTO add_ons (code, name, invoice_display_name, amount_cents, amount_currency, description)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (code) DO NOTHING",
            (add_on.code, add_on.name, add_on.invoice_display_name, add_on.amount_cents,
             add_on.amount_currency, add_on.description),
        )
        existing = get_add_on(conn, add_on.code)
    if existing != add_on:
        raise IdempotencyConflictError(f"add-on {add_on.code!r} exists with other terms: {existing}")
    return existing


def get_add_on(conn: psycopg.Connection, code: str) -> AddOn | None:
    row = conn.execute(
        "SELECT code, name, amount_cents, amount_currency, invoice_display_name, description"
        " FROM add_ons WHERE code = %s",
        (code,),
    ).fetchone()
    if row is None:
        return None
    return AddOn(row[0], row[1], int(row[2]), row[3].strip(), row[4], row[5])


def create_one_off_invoice(
    conn: psycopg.Connection,
    *,
    idempotency_key: str,
    external_customer_id: str,
    customer_name: str,
    currency: str,
    lines: Sequence[AddOnLine],
    issuing_date: date,
    billing_entity: str = "default",
    prefix: str = "BH",
) -> FinalizedInvoice:
    """Finalize a one-off invoice of add-ons (numbered in the billing entity's sequence)."""
    exponent = currency_exponent(currency)
    if not lines:
        raise CommercialTermsError(f"one-off invoice {idempotency_key!r}", "lines", "must list at least one add-on")
    instant = datetime.combine(issuing_date, time(0), tzinfo=UTC)
    fees = []
    for position, line in enumerate(lines):
        add_on = get_add_on(conn, line.add_on_code)
        where = f"one-off invoice {idempotency_key!r} line {position}"
        if add_on is None:
            raise CommercialTermsError(where, "add_on_code", f"{line.add_on_code!r} is not a known add-on")
        if add_on.amount_currency != currency:
            raise CommercialTermsError(where, "add_on_code",
                                       f"{add_on.code!r} is priced in {add_on.amount_currency}, the invoice in {currency}")
        if not isinstance(line.units, Decimal) or line.units <= 0:
            raise CommercialTermsError(where, "units", f"must be a positive Decimal, got {line.units!r}")
        unit_cents = add_on.amount_cents if line.unit_amount_cents is None else line.unit_amount_cents
        unit_amount = Decimal(unit_cents) / Decimal(10**exponent)
        precise = line.units * unit_amount
        fees.append(
            DraftFee(
                fee_key=f"{idempotency_key}/add_on/{position}",
                kind="add_on",
                external_subscription_id=None,
                plan_code=None,
                billable_metric_code=None,
                charge_model=None,
                invoice_display_name=line.invoice_display_name or add_on.invoice_display_name or add_on.name,
                period_start=instant,
                period_end=instant,
                units=line.units,
                unit_amount=unit_amount,
                precise_amount=precise,
                amount_cents=round_half_up(precise * 10**exponent),
                add_on_code=add_on.code,
            )
        )
    sub_total = sum(fee.amount_cents for fee in fees)
    draft = InvoiceDraft(
        invoice_key=f"one_off/{idempotency_key}",
        external_customer_id=external_customer_id,
        customer_name=customer_name,
        currency=currency,
        currency_exponent=exponent,
        issuing_date=issuing_date,
        period_start=instant,
        period_end=instant,
        sub_total_cents=sub_total,
        total_cents=sub_total,
        fees=tuple(fees),
        invoice_type="one_off",
    )
    (invoice,) = finalize_drafts(conn, [draft], billing_entity, prefix)
    return invoice
