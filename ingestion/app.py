"""The events API as a raw ASGI application (Lago's endpoints and payloads).

    POST /api/v1/events          {"event": {...}}      one event
    POST /api/v1/events/batch    {"events": [...]}     up to ``max_batch_events``
    GET  /health                 200 while the landing writer works, else 503
    GET  /metrics                Prometheus text
    GET  /openapi.json           the OpenAPI document (ingestion/openapi.json)
    GET  /api/v1/analytics/...   gross_revenue, mrr, overdue_balance, invoiced_usage (reporting.py)

A POST is checked in this order, and a refused request writes nothing: bearer key
(401, before the body is read), declared or actual body size (413, reading stops at
the limit), JSON (400), every event (422 with index, field and reason; a batch is all
or nothing). An accepted request is landed as one frame and answered 200 only after
the writer's fsync covered it. Duplicates (an identity already accepted) are stored
too, acknowledged, and reported: ``"duplicate": true`` for a single event,
``duplicate_indexes`` for a batch.

Raw ASGI rather than a framework: the hot path is one dict lookup for the route, no
request object, no middleware; msgspec decodes straight into typed structs.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

from billhouse.catalog import Catalog, load_catalog
from billhouse.errors import EventError
from ingestion.api_keys import KeyVerifier
from ingestion.config import IngestConfig
from ingestion.decoding import MalformedBody, decode_batch, decode_single
from ingestion.dedup import DuplicateIndex
from ingestion.errors import LandingError
from ingestion.landing import LandingWriter
from ingestion.metrics import IngestMetrics
from ingestion.reporting import reporting_routes
from ingestion.segments import encode_frame

OPENAPI_PATH = Path(__file__).with_name("openapi.json")

_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json")]
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    503: "Service Unavailable",
}


class _Refused(Exception):
    def __init__(self, status: int, body: dict[str, Any], events: int) -> None:
        self.status = status
        self.body = body
        self.events = events  # events in the refused request, for the rejected counter


def _error(status: int, code: str, events: int = 0, **details: Any) -> _Refused:
    body: dict[str, Any] = {"status": status, "error": _STATUS_TEXT[status], "code": code}
    body.update(details)
    return _Refused(status, body, events)


class IngestionApp:
    def __init__(self, config: IngestConfig, verifier: KeyVerifier) -> None:
        self.config = config
        self.verifier = verifier
        self.metrics = IngestMetrics()
        self.duplicates = DuplicateIndex()
        self.writer = LandingWriter(config.landing_dir, self.metrics, config.segment_max_bytes)
        self.catalog: Catalog | None = load_catalog(config.catalog_path) if config.catalog_path else None
        self.openapi = OPENAPI_PATH.read_bytes()
        self.ready = False
        self._routes = {
            (b"POST", "/api/v1/events"): self._post_single,
            (b"POST", "/api/v1/events/batch"): self._post_batch,
            (b"GET", "/health"): self._health,
            (b"GET", "/metrics"): self._metrics,
            (b"GET", "/openapi.json"): self._openapi,
        }
        # issue 7: Lago's analytics endpoints, from the snapshot the close exports (ingestion/reporting.py)
        self._routes.update(reporting_routes(config.landing_dir.parent, self._authorize))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- lifecycle -----------------------------------------------------------------

    def startup(self) -> None:
        self.writer.open(self.duplicates.add)
        self.verifier.prepare()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.startup)
                    self.writer.start(asyncio.get_running_loop())
                    self.ready = True
                except Exception as exc:  # reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.writer.close()
                self.verifier.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- HTTP ------------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        method = scope["method"].encode()
        handler = self._routes.get((method, scope["path"]))
        try:
            if handler is None:
                if any(path == scope["path"] for _, path in self._routes):
                    raise _error(405, "method_not_allowed")
                raise _error(404, "not_found")
            status, headers, body = await handler(scope, receive)
        except _Refused as refused:
            if refused.status != 404:
                self.metrics.reject(refused.status, refused.events)
            status, headers, body = refused.status, _JSON_HEADERS, _encode(refused.body)
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _authorize(self, scope: dict) -> None:
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    token = None
                break
        if not token or not await self.verifier.verify(token.strip()):
            raise _error(401, "unauthorized", message="missing or invalid API key (Authorization: Bearer <key>)")

    async def _read_body(self, scope: dict, receive: Any) -> bytes:
        limit = self.config.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise _error(400, "bad_request", message="invalid Content-Length") from None
                if declared > limit:
                    raise _error(413, "payload_too_large", message=f"the body exceeds {limit} bytes")
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _error(400, "bad_request", message="client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _error(413, "payload_too_large", message=f"the body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _land(self, rows: list) -> list[int]:
        """Land rows durably; return the indexes of duplicates. Raises 503 on failure."""
        duplicates = self.duplicates.mark(rows)
        ingested_at_us = self.writer.next_ingested_at_us()
        try:
            await self.writer.submit(ingested_at_us, encode_frame(rows, ingested_at_us), len(rows))
        except LandingError as exc:
            raise _error(503, "landing_unavailable", message=str(exc)) from None
        self.metrics.events_accepted += len(rows) - len(duplicates)
        self.metrics.events_duplicate += len(duplicates)
        return duplicates

    def _decode(self, body: bytes, single: bool) -> list:
        try:
            if single:
                return [decode_single(body, self.catalog)]
            return decode_batch(body, self.config.max_batch_events, self.catalog)
        except MalformedBody as exc:
            raise _error(400, "invalid_json", message=str(exc)) from None
        except EventError as exc:
            raise _error(
                422,
                "validation_errors",
                error_details={"index": exc.index, "field": exc.field, "reason": exc.reason},
                message=str(exc),
                events=_count_hint(body),
            ) from None

    async def _post_single(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        await self._authorize(scope)
        rows = self._decode(await self._read_body(scope, receive), single=True)
        duplicates = await self._land(rows)
        tx, sub, code, ms, properties = rows[0]
        event = {
            "lago_id": None,
            "transaction_id": tx,
            "external_subscription_id": sub,
            "code": code,
            "timestamp": _iso_ms(ms),
            "properties": msgspec.Raw(properties.encode()),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "duplicate": bool(duplicates),
        }
        return 200, _JSON_HEADERS, _encode({"event": event})

    async def _post_batch(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        await self._authorize(scope)
        rows = self._decode(await self._read_body(scope, receive), single=False)
        duplicates = await self._land(rows)
        return 200, _JSON_HEADERS, _encode({"events": len(rows), "duplicate_indexes": duplicates})

    async def _health(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        broken = self.writer.broken
        status = 200 if self.ready and not broken else 503
        body = {"status": "ok" if status == 200 else "unavailable", "landing": str(self.config.landing_dir)}
        if broken:
            body["reason"] = broken
        return status, _JSON_HEADERS, _encode(body)

    async def _metrics(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        return 200, [(b"content-type", b"text/plain; version=0.0.4")], self.metrics.render()

    async def _openapi(self, scope: dict, receive: Any) -> tuple[int, list, bytes]:
        return 200, _JSON_HEADERS, self.openapi


def _iso_ms(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _count_hint(body: bytes) -> int:
    """How many events a refused body held, for the rejected counter (best effort)."""
    return max(1, body.count(b'"transaction_id"'))


def create_app(config: IngestConfig, verifier: KeyVerifier) -> IngestionApp:
    return IngestionApp(config, verifier)
