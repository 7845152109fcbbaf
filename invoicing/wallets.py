"""Prepaid credits: one active wallet per customer, its top-ups and its balance history.

A wallet (Lago's object) holds credits in the customer's currency at ``rate_amount``
major units per credit (``rate_amount = 1`` and EUR: one credit is €1). Top-ups add
paid and/or granted credits; finalization consumes credits on the invoice after
coupons, taxes and credit-note credits, never more money than the wallet holds and
never below zero. Every movement is a ``wallet_transactions`` row carrying the
balance after it (the balance history), written in the same transaction as the
balance; each has an idempotency key, so a retried top-up adds nothing. The movement that
empties a wallet enqueues ``wallet.depleted`` (webhook outbox) in its transaction.

Paid credits are recorded as settled when topped up: collecting their payment (an
invoice for the purchase) is not part of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from invoicing.contents import WalletBalance, WalletUse
from invoicing.errors import CommercialTermsError, IdempotencyConflictError
from invoicing.money import currency_exponent, round_half_up
from invoicing.outbox import enqueue_event

__all__ = [
    "Wallet",
    "WalletTransaction",
    "create_wallet",
    "get_wallet",
    "lock_wallet_balance",
    "record_wallet_use",
    "top_up_wallet",
    "wallet_payload",
    "wallet_transactions",
]


@dataclass(frozen=True)
class Wallet:
    id: UUID
    external_customer_id: str
    name: str | None
    currency: str
    rate_amount: Decimal
    credits_balance: Decimal
    consumed_credits: Decimal
    status: str

    @property
    def balance_cents(self) -> Decimal:
        """The balance's money value in minor units (exact; consumption floors it)."""
        return self.credits_balance * self.rate_amount * 10 ** currency_exponent(self.currency)


@dataclass(frozen=True)
class WalletTransaction:
    id: UUID
    wallet_id: UUID
    idempotency_key: str
    transaction_type: str  # "inbound" | "outbound"
    source: str  # "top_up" | "invoice" | "invoice_voided"
    paid_credits: Decimal
    granted_credits: Decimal
    credits: Decimal
    amount_cents: int
    balance_after: Decimal
    invoice_id: UUID | None
    created_at: datetime


_WALLET_COLUMNS = (
    "id, external_customer_id, name, currency, rate_amount, credits_balance, consumed_credits, status"
)


def create_wallet(
    conn: psycopg.Connection,
    external_customer_id: str,
    currency: str,
    rate_amount: Decimal | str = Decimal(1),
    name: str | None = None,
) -> Wallet:
    """The customer's active wallet, created if it has none (same currency and rate)."""
    currency_exponent(currency)
    rate = _decimal(rate_amount, "rate_amount", external_customer_id)
    if rate <= 0:
        raise CommercialTermsError(f"wallet of {external_customer_id!r}", "rate_amount", f"must be positive, got {rate}")
    with conn.transaction():
        conn.execute(
            "INSERT INTO wallets (external_customer_id, name, currency, rate_amount)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (external_customer_id) WHERE status = 'active' DO NOTHING",
            (external_customer_id, name, currency, rate),
        )
        wallet = get_wallet(conn, external_customer_id)
    assert wallet is not None
    if (wallet.currency, wallet.rate_amount) != (currency, rate):
        raise IdempotencyConflictError(
            f"customer {external_customer_id!r} has an active wallet in {wallet.currency}"
            f" at {wallet.rate_amount} per credit"
        )
    return wallet


def get_wallet(conn: psycopg.Connection, external_customer_id: str) -> Wallet | None:
    """The customer's active wallet, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE external_customer_id = %s AND status = 'active'",
            (external_customer_id,),
        ).fetchone()
    return _wallet(row) if row else None


def top_up_wallet(
    conn: psycopg.Connection,
    external_customer_id: str,
    *,
    idempotency_key: str,
    paid_credits: Decimal | str = Decimal(0),
    granted_credits: Decimal | str = Decimal(0),
) -> WalletTransaction:
    """Add paid and/or granted credits; a retry with the same key adds nothing."""
    paid = _decimal(paid_credits, "paid_credits", external_customer_id)
    granted = _decimal(granted_credits, "granted_credits", external_customer_id)
    if paid < 0 or granted < 0 or paid + granted <= 0:
        raise CommercialTermsError(
            f"top-up of {external_customer_id!r}", "paid_credits/granted_credits",
            f"must be non-negative with a positive sum, got {paid} and {granted}",
        )
    if not idempotency_key:
        raise CommercialTermsError(f"top-up of {external_customer_id!r}", "idempotency_key", "is required")
    with conn.transaction():
        existing = _transactions(conn, "t.idempotency_key = %s", (idempotency_key,))
        if existing:
            return _same_top_up(existing[0], external_customer_id, paid, granted)
        wallet = _lock(conn, external_customer_id)
        if wallet is None:
            raise CommercialTermsError(f"top-up of {external_customer_id!r}", "wallet",
                                       "the customer has no active wallet (create_wallet first)")
        credits = paid + granted
        balance = wallet.credits_balance + credits
        conn.execute(
            "UPDATE wallets SET credits_balance = %s, updated_at = now() WHERE id = %s",
            (balance, wallet.id),
        )
        amount = credits * wallet.rate_amount * 10 ** currency_exponent(wallet.currency)
        conn.execute(
            "INSERT INTO wallet_transactions (wallet_id, idempotency_key, transaction_type, source,"
            " paid_credits, granted_credits, credits, amount_cents, balance_after)"
            " VALUES (%s, %s, 'inbound', 'top_up', %s, %s, %s, %s, %s)",
            (wallet.id, idempotency_key, paid, granted, credits, round_half_up(amount), balance),
        )
        return _transactions(conn, "t.idempotency_key = %s", (idempotency_key,))[0]


def wallet_transactions(conn: psycopg.Connection, external_customer_id: str) -> list[WalletTransaction]:
    """The balance history of the customer's wallets, oldest first."""
    return _transactions(conn, "w.external_customer_id = %s", (external_customer_id,))


def lock_wallet_balance(conn: psycopg.Connection, external_customer_id: str) -> WalletBalance | None:
    """The active wallet's balance, locked until the transaction ends."""
    wallet = _lock(conn, external_customer_id)
    if wallet is None:
        return None
    return WalletBalance(wallet.id, wallet.currency, wallet.rate_amount, wallet.credits_balance)


def record_wallet_use(conn: psycopg.Connection, invoice_id: UUID, use: WalletUse) -> None:
    """Consume the credits an invoice took (wallet locked by ``lock_wallet_balance``).

    A use that leaves the balance at zero enqueues ``wallet.depleted`` in the same
    transaction, keyed by the wallet transaction (once per emptying movement).
    """
    conn.execute(
        "UPDATE wallets SET credits_balance = credits_balance - %s,"
        " consumed_credits = consumed_credits + %s, updated_at = now() WHERE id = %s",
        (use.credits, use.credits, use.wallet_id),
    )
    row = conn.execute(
        "INSERT INTO wallet_transactions (wallet_id, idempotency_key, transaction_type, source,"
        " credits, amount_cents, balance_after, invoice_id)"
        " VALUES (%s, %s, 'outbound', 'invoice', %s, %s, %s, %s) RETURNING id",
        (use.wallet_id, f"invoice/{invoice_id}", use.credits, use.amount_cents, use.balance_after, invoice_id),
    ).fetchone()
    assert row is not None
    if use.balance_after <= 0:
        _enqueue_wallet_depleted(conn, use.wallet_id, row[0])


def wallet_payload(wallet: Wallet) -> dict[str, Any]:
    """The ``wallet`` object of a ``wallet.*`` event (Lago's field names)."""
    return {
        "lago_id": str(wallet.id),
        "external_customer_id": wallet.external_customer_id,
        "name": wallet.name,
        "currency": wallet.currency,
        "status": wallet.status,
        "rate_amount": wallet.rate_amount,
        "credits_balance": wallet.credits_balance,
        "balance_cents": round_half_up(wallet.balance_cents),
        "consumed_credits": wallet.consumed_credits,
    }


def _enqueue_wallet_depleted(conn: psycopg.Connection, wallet_id: UUID, transaction_id: UUID) -> None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE id = %s", (wallet_id,)).fetchone()
    assert row is not None
    movement = _transactions(conn, "t.id = %s", (transaction_id,))[0]
    enqueue_event(
        conn,
        "wallet.depleted",
        {
            "wallet": wallet_payload(_wallet(row)),
            "wallet_transaction": {
                "lago_id": str(movement.id),
                "transaction_type": movement.transaction_type,
                "source": movement.source,
                "credits": movement.credits,
                "amount_cents": movement.amount_cents,
                "balance_after": movement.balance_after,
                "lago_invoice_id": str(movement.invoice_id) if movement.invoice_id else None,
                "created_at": movement.created_at,
            },
        },
        wallet_id,
        idempotency_key=f"wallet.depleted:{transaction_id}",
    )


def _lock(conn: psycopg.Connection, external_customer_id: str) -> Wallet | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallets WHERE external_customer_id = %s"
            " AND status = 'active' FOR UPDATE",
            (external_customer_id,),
        ).fetchone()
    return _wallet(row) if row else None


def _wallet(row: dict[str, Any]) -> Wallet:
    return Wallet(**{**row, "currency": row["currency"].strip()})


def _transactions(conn: psycopg.Connection, where: str, params: tuple[Any, ...]) -> list[WalletTransaction]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT t.id, t.wallet_id, t.idempotency_key, t.transaction_type, t.source,"
            " t.paid_credits, t.granted_credits, t.credits, t.amount_cents, t.balance_after,"
            " t.invoice_id, t.created_at, w.external_customer_id"
            f" FROM wallet_transactions t JOIN wallets w ON w.id = t.wallet_id WHERE {where}"
            " ORDER BY t.position".encode(),
            params,
        ).fetchall()
    result = []
    for row in rows:
        row.pop("external_customer_id")
        result.append(WalletTransaction(**row))
    return result


def _same_top_up(existing: WalletTransaction, customer: str, paid: Decimal, granted: Decimal) -> WalletTransaction:
    if existing.source != "top_up" or (existing.paid_credits, existing.granted_credits) != (paid, granted):
        raise IdempotencyConflictError(
            f"idempotency key {existing.idempotency_key!r} was used for another wallet movement"
            f" ({existing.source}: {existing.paid_credits} paid, {existing.granted_credits} granted)"
        )
    return existing


def _decimal(value: Decimal | str | int, field: str, customer: str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise CommercialTermsError(f"wallet of {customer!r}", field, "must be a decimal string or Decimal, not float")
    try:
        number = Decimal(value)
    except Exception as exc:
        raise CommercialTermsError(f"wallet of {customer!r}", field, f"is not a number: {value!r}") from exc
    if not number.is_finite():
        raise CommercialTermsError(f"wallet of {customer!r}", field, f"is not finite: {value!r}")
    return number
