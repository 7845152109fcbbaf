"""Outgoing webhooks: endpoints, delivery from the outbox, signatures.

Events are recorded by ``invoicing.outbox.enqueue_event``; ``deliver_webhooks`` POSTs
every due delivery to its endpoint and records the answer. A 2xx answer delivers it;
anything else (error status, timeout, refused connection) schedules a retry with
exponential backoff (``WebhookPolicy``) until ``max_attempts``, after which the
delivery is ``failed``. Receivers get each event at least once and dedupe by its id,
which is the same on every attempt.

Each request carries:

    Content-Type: application/json
    Billhouse-Event-Id: evt_...
    Billhouse-Event-Type: invoice.finalized
    Billhouse-Signature: t=1767225600,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The body is ``{"id", "type", "object_id", "created_at", "data"}`` as compact JSON with
sorted keys. ``verify_signature(secret, header, body, tolerance)`` is the receiver's
check (constant-time, with a replay window).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import psycopg
from psycopg.rows import dict_row

from invoicing.errors import InvoicingError
from invoicing.outbox import EVENT_TYPES, UnknownEventTypeError, canonical_json

__all__ = [
    "SIGNATURE_HEADER",
    "DeliveryReport",
    "InvalidSignatureError",
    "WebhookEndpoint",
    "WebhookEndpointError",
    "WebhookPolicy",
    "add_webhook_endpoint",
    "deliver_webhooks",
    "disable_webhook_endpoint",
    "list_webhook_endpoints",
    "sign_payload",
    "signature_header",
    "verify_signature",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "Billhouse-Signature"
EVENT_ID_HEADER = "Billhouse-Event-Id"
EVENT_TYPE_HEADER = "Billhouse-Event-Type"


class WebhookEndpointError(InvoicingError, ValueError):
    """An endpoint cannot be registered as given (field and reason)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"webhook endpoint {field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidSignatureError(InvoicingError):
    """A webhook's signature header is missing, malformed, stale or wrong."""


@dataclass(frozen=True)
class WebhookEndpoint:
    id: UUID
    url: str
    secret: str
    event_types: tuple[str, ...] | None  # None: every event type
    enabled: bool


@dataclass(frozen=True)
class WebhookPolicy:
    """Retry schedule: attempt n (1-based) failing waits ``base * 2**(n-1)``, capped."""

    max_attempts: int = 10
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_cap: timedelta = timedelta(hours=6)
    timeout_seconds: float = 10.0

    def retry_delay(self, attempts_made: int) -> timedelta:
        """Wait after the ``attempts_made``-th failed attempt (30 s, 60 s, 120 s, ...)."""
        return min(self.backoff_base * 2 ** (attempts_made - 1), self.backoff_cap)


@dataclass
class DeliveryReport:
    delivered: list[tuple[str, UUID]] = field(default_factory=list)  # (event id, endpoint)
    retrying: list[tuple[str, UUID]] = field(default_factory=list)
    failed: list[tuple[str, UUID]] = field(default_factory=list)  # gave up


# -- endpoints --------------------------------------------------------------------


def add_webhook_endpoint(
    conn: psycopg.Connection,
    url: str,
    *,
    secret: str | None = None,
    event_types: Iterable[str] | None = None,
) -> WebhookEndpoint:
    """Register (or update) the endpoint at ``url``; a secret is generated if none given.

    It receives the events enqueued from now on (events are fanned out at enqueue time).
    """
    if not url.startswith(("http://", "https://")):
        raise WebhookEndpointError("url", f"{url!r} is not an http(s) URL")
    secret = secret if secret is not None else "whsec_" + secrets.token_hex(24)
    if len(secret) < 16:
        raise WebhookEndpointError("secret", "must be at least 16 characters")
    types = None if event_types is None else tuple(event_types)
    for event_type in types or ():
        if event_type not in EVENT_TYPES:
            raise UnknownEventTypeError(event_type)
    with conn.transaction():
        row = conn.execute(
            """
            INSERT INTO webhook_endpoints (url, secret, event_types) VALUES (%s, %s, %s)
            ON CONFLICT (url) DO UPDATE SET secret = EXCLUDED.secret,
                event_types = EXCLUDED.event_types, enabled = true, updated_at = now()
            RETURNING id
            """,
            (url, secret, list(types) if types is not None else None),
        ).fetchone()
    assert row is not None
    return WebhookEndpoint(row[0], url, secret, types, True)


def disable_webhook_endpoint(conn: psycopg.Connection, endpoint_id: UUID) -> None:
    """Stop fanning new events out to the endpoint (queued deliveries still go)."""
    with conn.transaction():
        conn.execute(
            "UPDATE webhook_endpoints SET enabled = false, updated_at = now() WHERE id = %s",
            (endpoint_id,),
        )


def list_webhook_endpoints(conn: psycopg.Connection) -> list[WebhookEndpoint]:
    rows = conn.execute(
        "SELECT id, url, secret, event_types, enabled FROM webhook_endpoints ORDER BY created_at"
    ).fetchall()
    return [
        WebhookEndpoint(r[0], r[1], r[2], None if r[3] is None else tuple(r[3]), r[4]) for r in rows
    ]


# -- signatures -------------------------------------------------------------------


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"<timestamp>." + body`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Billhouse-Signature`` value: ``t=<unix seconds>,v1=<hex>``."""
    return f"t={timestamp},v1={sign_payload(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str | None, body: bytes, tolerance: int = 300, *, now: float | None = None
) -> int:
    """Check a received webhook; return its timestamp or raise ``InvalidSignatureError``.

    ``body`` is the raw request body (bytes, before any JSON parsing). The timestamp
    must be within ``tolerance`` seconds of ``now`` (default: the clock), which bounds
    replays. Several ``v1=`` entries are accepted (secret rotation); one must match.
    """
    if not header:
        raise InvalidSignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise InvalidSignatureError(f"timestamp {value!r} is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidSignatureError(f"{SIGNATURE_HEADER} needs t= and v1= ({header!r})")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignatureError(
            f"timestamp {timestamp} is {abs(current - timestamp):.0f}s away from now"
            f" (tolerance {tolerance}s)"
        )
    expected = sign_payload(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise InvalidSignatureError("no v1 signature matches the body and secret")
    return timestamp


# -- delivery ---------------------------------------------------------------------


def deliver_webhooks(
    conn: psycopg.Connection,
    *,
    policy: WebhookPolicy = WebhookPolicy(),
    now: datetime | None = None,
    client: httpx.Client | None = None,
    limit: int = 1000,
) -> DeliveryReport:
    """Send every delivery due by ``now`` (default: the clock), oldest first.

    Each delivery is locked (``FOR UPDATE SKIP LOCKED``) in its own transaction while it
    is sent, so concurrent deliverers never send the same attempt twice. Needs a
    connection outside any transaction.
    """
    report = DeliveryReport()
    owned = client is None
    http = client or httpx.Client(timeout=policy.timeout_seconds, follow_redirects=False)
    try:
        for _ in range(limit):
            with conn.transaction():
                due = _next_due(conn, now)
                if due is None:
                    break
                outcome = _send(http, due)
                _record(conn, due, outcome, policy, now, report)
    finally:
        if owned:
            http.close()
    return report


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    status_code: int | None
    error: str | None


def _next_due(conn: psycopg.Connection, now: datetime | None) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """
            SELECT d.event_id, d.endpoint_id, d.attempts, e.event_type, e.object_id, e.payload,
                   e.created_at, p.url, p.secret
            FROM webhook_deliveries d
            JOIN webhook_events e ON e.id = d.event_id
            JOIN webhook_endpoints p ON p.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= coalesce(%s, now())
            ORDER BY d.next_attempt_at, e.position, d.endpoint_id
            LIMIT 1
            FOR UPDATE OF d SKIP LOCKED
            """,
            (now,),
        ).fetchone()


def event_body(due: dict[str, Any]) -> bytes:
    """The request body of an event: identical on every attempt."""
    return canonical_json(
        {
            "id": due["event_id"],
            "type": due["event_type"],
            "object_id": due["object_id"],
            "created_at": due["created_at"].astimezone(UTC).isoformat(),
            "data": due["payload"],
        }
    )


def _send(http: httpx.Client, due: dict[str, Any]) -> _Outcome:
    body = event_body(due)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "billhouse-webhooks/1",
        EVENT_ID_HEADER: due["event_id"],
        EVENT_TYPE_HEADER: due["event_type"],
        SIGNATURE_HEADER: signature_header(due["secret"], int(time.time()), body),
    }
    try:
        response = http.post(due["url"], content=body, headers=headers)
    except httpx.HTTPError as exc:
        return _Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= response.status_code < 300:
        return _Outcome(True, response.status_code, None)
    return _Outcome(False, response.status_code, response.text[:500])


def _record(
    conn: psycopg.Connection,
    due: dict[str, Any],
    outcome: _Outcome,
    policy: WebhookPolicy,
    now: datetime | None,
    report: DeliveryReport,
) -> None:
    key = (due["event_id"], due["endpoint_id"])
    attempts = due["attempts"] + 1
    if outcome.ok:
        status, next_at = "delivered", None
        report.delivered.append(key)
    elif attempts >= policy.max_attempts:
        status, next_at = "failed", None
        report.failed.append(key)
        logger.warning("webhook %s to %s failed %d times; giving up", key[0], due["url"], attempts)
    else:
        status = "pending"
        next_at = (now or datetime.now(UTC)) + policy.retry_delay(attempts)
        report.retrying.append(key)
    conn.execute(
        """
        UPDATE webhook_deliveries SET
            status = %s, attempts = %s, next_attempt_at = coalesce(%s, next_attempt_at),
            last_status_code = %s, last_error = %s,
            delivered_at = CASE WHEN %s = 'delivered' THEN now() END, updated_at = now()
        WHERE event_id = %s AND endpoint_id = %s
        """,
        (status, attempts, next_at, outcome.status_code, outcome.error, status, *key),
    )
