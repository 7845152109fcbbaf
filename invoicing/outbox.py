"""The webhook outbox: record events in the transaction of the change they report.

``enqueue_event(conn, event_type, payload, object_id)`` inserts one event into
``webhook_events`` and one pending delivery per enabled endpoint subscribed to its
type, inside the caller's open transaction (a savepoint) or, on an autocommit
connection with none open, in a transaction of its own. The event therefore exists
exactly when the change it reports committed; ``invoicing.webhooks.deliver_webhooks``
sends it later, at least once, under the same event id every time.

An event's payload is plain JSON data: ``Decimal`` becomes a string (exact), dates and
instants ISO 8601 strings, UUIDs strings. Money travels as integer minor units.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from invoicing.errors import InvoicingError
from invoicing.ledger import FinalizedInvoice

__all__ = [
    "EVENT_TYPES",
    "UnknownEventTypeError",
    "enqueue_event",
    "enqueue_invoice_finalized_events",
    "invoice_payload",
    "to_json_data",
]

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.overdue",
        "credit_note.created",
        "wallet.depleted",
    }
)


class UnknownEventTypeError(InvoicingError, ValueError):
    """The event type is not one billhouse sends."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"event_type {event_type!r}: not one of {sorted(EVENT_TYPES)}")
        self.event_type = event_type


def enqueue_event(
    conn: psycopg.Connection,
    event_type: str,
    payload: Mapping[str, Any],
    object_id: str | UUID,
    *,
    idempotency_key: str | None = None,
) -> str:
    """Record an event for delivery; return its id (``evt_`` + 32 hex digits).

    Call it inside the transaction that makes the change (``with conn.transaction():``).
    ``object_id`` is the id of what the event is about (invoice, credit note, wallet).
    With an ``idempotency_key``, enqueueing the same key again records nothing and
    returns the first event's id.
    """
    if event_type not in EVENT_TYPES:
        raise UnknownEventTypeError(event_type)
    data = to_json_data(dict(payload))
    event_id = "evt_" + uuid.uuid4().hex
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO webhook_events (id, event_type, object_id, payload, idempotency_key)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """,
            (event_id, event_type, str(object_id), Jsonb(data), idempotency_key),
        ).fetchone()
        if row is None:
            existing = conn.execute(
                "SELECT id FROM webhook_events WHERE idempotency_key = %s", (idempotency_key,)
            ).fetchone()
            assert existing is not None
            return str(existing[0])
        conn.execute(
            """
            INSERT INTO webhook_deliveries (event_id, endpoint_id)
            SELECT %s, id FROM webhook_endpoints
            WHERE enabled AND (event_types IS NULL OR %s = ANY (event_types))
            """,
            (event_id, event_type),
        )
    return event_id


def invoice_payload(invoice: FinalizedInvoice) -> dict[str, Any]:
    """The ``invoice`` object every ``invoice.*`` event carries (Lago's field names)."""
    return {
        "lago_id": str(invoice.id),
        "number": invoice.number,
        "billing_entity": invoice.billing_entity,
        "external_customer_id": invoice.external_customer_id,
        "customer_name": invoice.customer_name,
        "currency": invoice.currency,
        "issuing_date": invoice.issuing_date.isoformat(),
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "status": invoice.status,
        "payment_status": invoice.payment_status,
        "sub_total_cents": invoice.sub_total_cents,
        "total_cents": invoice.total_cents,
        "finalized_at": invoice.finalized_at.isoformat(),
    }


def enqueue_invoice_finalized_events(conn: psycopg.Connection, invoice: FinalizedInvoice) -> None:
    """``invoice.created`` then ``invoice.finalized`` for a newly finalized invoice.

    Called by finalization inside its transaction. billhouse creates invoices
    finalized, so both are sent together (Lago sends ``invoice.created`` for an invoice
    finalized at creation, ``invoice.finalized`` when a draft is finalized).
    """
    body = {"invoice": invoice_payload(invoice)}
    for event_type in ("invoice.created", "invoice.finalized"):
        enqueue_event(
            conn, event_type, body, invoice.id, idempotency_key=f"{event_type}:{invoice.id}"
        )


def to_json_data(value: Any) -> Any:
    """Plain JSON data from payload values; refuses floats (money is never a float)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        raise TypeError("webhook payloads carry no floats: use int minor units or Decimal")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_data(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} in a webhook payload")


def canonical_json(value: Any) -> bytes:
    """The bytes sent for a JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
