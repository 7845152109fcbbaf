"""Invoice numbers: gapless and sequential per billing entity.

Format: ``{prefix}-{sequence:06d}``, e.g. ``BH-000001``, ``BH-000002``, ...

- The sequence starts at 1 for each billing entity and grows by exactly 1 with each
  finalized invoice. It never skips: the number is taken in the transaction that
  inserts the invoice, so a failed finalization rolls its number back. It is never
  reused: a voided invoice keeps its number.
- Past 999999 the number widens (``BH-1000000``); it never wraps.
- The prefix belongs to the billing entity: it is fixed by the entity's first invoice,
  no two entities share one (so numbers are unique across the ledger), and asking for
  another prefix for the same entity is an error. A prefix is upper-case letters,
  digits, ``_`` and ``-``, starting with a letter or digit.

Concurrency: the entity's row in ``billing_entity_sequences`` is locked
(``SELECT ... FOR UPDATE``) until the finalizing transaction ends, so finalizations of
one entity are serialized across processes and numbers come out in commit order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg.pq import TransactionStatus

from invoicing.errors import BillingEntityPrefixError, TransactionStateError

__all__ = ["NumberSequence", "format_invoice_number", "issue_next_number", "lock_sequence"]

_PREFIX = re.compile(r"^[A-Z0-9][A-Z0-9_-]*$")


@dataclass(frozen=True)
class NumberSequence:
    """A billing entity's sequence, locked by the current transaction."""

    billing_entity: str
    prefix: str
    last_number: int


def format_invoice_number(prefix: str, sequence: int) -> str:
    """``format_invoice_number("BH", 1) == "BH-000001"``."""
    if not _PREFIX.match(prefix):
        raise BillingEntityPrefixError(f"invalid invoice number prefix {prefix!r}")
    if sequence < 1:
        raise ValueError(f"invoice sequence numbers start at 1, got {sequence}")
    return f"{prefix}-{sequence:06d}"


def lock_sequence(conn: psycopg.Connection, billing_entity: str, prefix: str) -> NumberSequence:
    """Create the entity's sequence if new, lock it until the transaction ends."""
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise TransactionStateError("lock_sequence() must run inside a transaction")
    if not _PREFIX.match(prefix):
        raise BillingEntityPrefixError(f"invalid invoice number prefix {prefix!r}")
    conn.execute(
        "INSERT INTO billing_entity_sequences (billing_entity, invoice_prefix) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING",
        (billing_entity, prefix),
    )
    row = conn.execute(
        "SELECT invoice_prefix, last_number FROM billing_entity_sequences"
        " WHERE billing_entity = %s FOR UPDATE",
        (billing_entity,),
    ).fetchone()
    if row is None:  # the insert hit the unique prefix of another entity
        raise BillingEntityPrefixError(
            f"prefix {prefix!r} already numbers another billing entity's invoices"
        )
    if row[0] != prefix:
        raise BillingEntityPrefixError(
            f"billing entity {billing_entity!r} numbers invoices with prefix {row[0]!r},"
            f" not {prefix!r}"
        )
    return NumberSequence(billing_entity, prefix, row[1])


def issue_next_number(conn: psycopg.Connection, sequence: NumberSequence) -> tuple[int, str]:
    """Advance the locked sequence by one; return (sequential_id, number)."""
    next_value = sequence.last_number + 1
    cursor = conn.execute(
        "UPDATE billing_entity_sequences SET last_number = %s, updated_at = now()"
        " WHERE billing_entity = %s AND last_number = %s",
        (next_value, sequence.billing_entity, sequence.last_number),
    )
    if cursor.rowcount != 1:
        raise TransactionStateError(
            f"sequence of {sequence.billing_entity!r} moved: issue numbers only from a"
            " sequence locked in the current transaction, once per lock_sequence()"
        )
    return next_value, format_invoice_number(sequence.prefix, next_value)
