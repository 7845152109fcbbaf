"""Request bodies → landed rows, with ``billhouse.events.validate_event`` as the one schema.

Two paths give the same answer:

* the *fast path* decodes the body straight into typed msgspec structs (C speed) and
  converts each event with a few cheap operations; it handles only the plain shapes
  (string ids, an int/float/ISO/absent timestamp, an object or absent ``properties``)
  and hands anything else — including every error — to
* the *reference path*: a generic decode, then ``validate_event`` per event, exactly as
  every other way in (CLI, demo) validates. Its ``EventError`` (index, field, reason)
  is what a client sees.

``tests/test_ingestion_decoding.py`` checks on generated bodies that whenever the fast
path answers, its rows equal the reference path's. One extra rule lives here because
it is a limit of the store, not of the event: timestamps must fit ClickHouse's
``DateTime64(3)`` (1900-01-01 to 2299-12-31), or the close could not load them. And
one reading is Lago's: a timestamp string of Unix seconds ("1793491200.5") is taken as
that number, as Lago's API does and as the lago-python-client sends it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, NamedTuple

import msgspec

from billhouse.catalog import Catalog
from billhouse.errors import EventError
from billhouse.events import MAX_ID_LENGTH, Event, check_metric_field, json_number, validate_event
from ingestion.dedup import identity_key
from ingestion.segments import Row

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
MIN_TIMESTAMP_MS = (datetime(1900, 1, 1, tzinfo=timezone.utc) - EPOCH) // _MS
MAX_TIMESTAMP_MS = (datetime(2300, 1, 1, tzinfo=timezone.utc) - EPOCH) // _MS - 1
_MIN_SECONDS = -(-MIN_TIMESTAMP_MS // 1000)
_MAX_SECONDS = MAX_TIMESTAMP_MS // 1000

# Lago also takes Unix seconds written as a JSON string ("1793491200", "1793491200.5");
# the lago-python-client sends them so. They are read as the exact decimal they spell.
_UNIX_SECONDS_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")

# Same output as validate_event's json.dumps(properties, sort_keys=True, default=...):
# the standard library's own C encoder with json.dumps's separators, built once instead
# of per call (half the cost). Decoded JSON cannot be circular, so no markers.
try:
    from json.encoder import c_make_encoder, encode_basestring_ascii

    _c_encode = c_make_encoder(None, json_number, encode_basestring_ascii, None, ": ", ", ", True, False, True)

    def _encode_properties(properties: dict) -> str:
        return "".join(_c_encode(properties, 0))

except ImportError:  # no C accelerator: the plain encoder, same output
    _encode_properties = json.JSONEncoder(sort_keys=True, default=json_number).encode


class MalformedBody(ValueError):
    """The body is not JSON (400); shape and field errors are EventError (422)."""


class WireEvent(msgspec.Struct):
    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp: int | float | str | None = None
    properties: dict[str, Any] | None = None


class WireBatch(msgspec.Struct):
    events: list[WireEvent]


class WireSingle(msgspec.Struct):
    event: WireEvent


# Numbers with a fraction or exponent in `properties` decode to Decimal, never float:
# a value is stored as the decimal it spells (as a JSON string, events.json_number),
# not as the nearest double (123456789012345678.123456789012 stays that).
_decode_batch = msgspec.json.Decoder(WireBatch, float_hook=Decimal).decode
_decode_single = msgspec.json.Decoder(WireSingle, float_hook=Decimal).decode
_decode_any = msgspec.json.Decoder(float_hook=Decimal).decode


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class CheckedEvent(msgspec.Struct):
    """The plainest event shape, checked by msgspec in C: what ``check_batch`` accepts
    without building rows (ids of 1–255 characters, integer Unix seconds in the
    warehouse's range or no timestamp, an object or no properties)."""

    transaction_id: _Id
    external_subscription_id: _Id
    code: _Id
    timestamp: Annotated[int, msgspec.Meta(ge=_MIN_SECONDS, le=_MAX_SECONDS)] | None = None
    properties: dict[str, Any] | None = None


class CheckedBatch(msgspec.Struct):
    events: list[CheckedEvent]


_decode_checked = msgspec.json.Decoder(CheckedBatch, float_hook=Decimal).decode


class BatchCheck(NamedTuple):
    """A valid batch: its event count, the identity keys (``dedup.identity_key``) in
    order, the arrival instant used for absent timestamps, and its rows when the
    reference path built them (None: the body is plain and ``decode_batch(body,
    now_ms=now_ms)`` gives the rows, as the loader does)."""

    count: int
    identities: list
    now_ms: int
    rows: list[Row] | None


def check_batch(body: bytes, max_events: int, catalog: Catalog | None = None) -> BatchCheck:
    """Validate a ``{"events": [...]}`` body without building rows when it is plain.

    Accepts exactly what ``decode_batch`` accepts and raises what it raises: a plain
    body (``CheckedEvent`` shapes, no whitespace-only id, no NUL escape) is checked
    here — every such body is one ``fast_rows`` answers for, so ``decode_batch`` later
    gives its rows — and anything else goes through ``decode_batch`` now.
    """
    now_ms = _now_ms()
    if b"\\u0000" not in body:  # no NUL in any id: the identity key is sub NUL tx
        try:
            events = _decode_checked(body).events
        except msgspec.DecodeError:
            events = None
        if events is not None and 0 < len(events) <= max_events:
            identities: list[str] = []
            append = identities.append
            for event in events:
                tx = event.transaction_id
                sub = event.external_subscription_id
                if tx.isspace() or sub.isspace() or event.code.isspace():
                    break
                append(sub + "\x00" + tx)
            else:
                if catalog is not None:
                    for index, event in enumerate(events):
                        check_metric_field(index, event.code, event.properties or {}, catalog)
                return BatchCheck(len(events), identities, now_ms, None)
    rows = decode_batch(body, max_events, catalog, now_ms=now_ms)
    return BatchCheck(len(rows), [identity_key(row[1], row[0]) for row in rows], now_ms, rows)


def decode_batch(body: bytes, max_events: int, catalog: Catalog | None = None, now_ms: int | None = None) -> list[Row]:
    """Rows of a ``{"events": [...]}`` body; all or nothing (raises on the first bad event).

    ``now_ms`` is the arrival instant given to events without a timestamp (default: now).
    """
    if now_ms is None:
        now_ms = _now_ms()
    try:
        events = _decode_batch(body).events
    except msgspec.DecodeError:
        events = None
    if events is not None and 0 < len(events) <= max_events:
        rows = fast_rows(events, now_ms, catalog)
        if rows is not None:
            return rows
    document = _decode_generic(body)
    raw_events = document.get("events") if isinstance(document, Mapping) else None
    if not isinstance(raw_events, list):
        raise EventError(0, "events", "is required and must be a list of events")
    if not raw_events:
        raise EventError(0, "events", "must hold at least one event")
    if len(raw_events) > max_events:
        raise EventError(max_events, "events", f"at most {max_events} events per call, got {len(raw_events)}")
    return reference_rows(raw_events, now_ms, catalog)


def decode_single(body: bytes, catalog: Catalog | None = None) -> Row:
    """The row of a ``{"event": {...}}`` body."""
    now_ms = _now_ms()
    try:
        event = _decode_single(body).event
    except msgspec.DecodeError:
        event = None
    if event is not None:
        rows = fast_rows([event], now_ms, catalog)
        if rows is not None:
            return rows[0]
    document = _decode_generic(body)
    if not isinstance(document, Mapping) or "event" not in document:
        raise EventError(0, "event", "is required and must be an event object")
    return reference_rows([document["event"]], now_ms, catalog)[0]


def fast_rows(events: Sequence[WireEvent], now_ms: int, catalog: Catalog | None = None) -> list[Row] | None:
    """Convert plain-shaped events; None when any event needs the reference path."""
    rows: list[Row] = []
    append = rows.append
    for index, event in enumerate(events):
        tx = event.transaction_id
        sub = event.external_subscription_id
        code = event.code
        if not tx or not sub or not code:
            return None
        if len(tx) > MAX_ID_LENGTH or len(sub) > MAX_ID_LENGTH or len(code) > MAX_ID_LENGTH:
            return None
        if tx.isspace() or sub.isspace() or code.isspace():
            return None
        if "\x00" in tx or "\x00" in sub or "\x00" in code:  # validate_event refuses these
            return None
        value = event.timestamp
        kind = type(value)
        if value is None:
            ms = now_ms
        elif kind is int:
            if not _MIN_SECONDS <= value <= _MAX_SECONDS:
                return None
            ms = value * 1000
        elif kind is float:
            text = repr(value)
            if value < 0 or "e" in text or "n" in text:
                return None
            whole, _, fraction = text.partition(".")
            ms = int(whole) * 1000 + int((fraction + "000")[:3])
            if ms > MAX_TIMESTAMP_MS:
                return None
        elif _UNIX_SECONDS_TEXT.fullmatch(value):
            whole, _, fraction = value.partition(".")
            ms = int(whole) * 1000 + int((fraction + "000")[:3])
            if ms > MAX_TIMESTAMP_MS:
                return None
        else:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            if moment.tzinfo is None:
                return None
            ms = (moment - EPOCH) // _MS
            if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
                return None
        properties = event.properties
        if catalog is not None:
            check_metric_field(index, code, properties or {}, catalog)
        encoded = _encode_properties(properties) if properties else "{}"
        # perhaps a NUL, which validate_event refuses (msgspec never decodes an unpaired surrogate)
        if "\\u0000" in encoded:
            return None
        append((tx, sub, code, ms, encoded))
    return rows


def reference_rows(raw_events: list[Any], now_ms: int, catalog: Catalog | None = None) -> list[Row]:
    """Validate each event with ``validate_event``; raise the first EventError."""
    rows: list[Row] = []
    for index, raw in enumerate(raw_events):
        if isinstance(raw, Mapping):
            timestamp = raw.get("timestamp")
            if timestamp is None:
                # "default now" is the request's arrival, the same instant as the fast path
                raw = {**raw, "timestamp": _ms_decimal(now_ms)}
            elif isinstance(timestamp, str) and _UNIX_SECONDS_TEXT.fullmatch(timestamp):
                raw = {**raw, "timestamp": Decimal(timestamp)}
        try:
            event = validate_event(index, raw, catalog)
        except OverflowError as exc:
            raise EventError(index, "timestamp", "is out of range") from exc
        rows.append(row_of(index, event))
    return rows


def row_of(index: int, event: Event) -> Row:
    ms = (event.timestamp - EPOCH) // _MS
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise EventError(index, "timestamp", "must be between 1900-01-01 and 2299-12-31 (the warehouse's range)")
    return (event.transaction_id, event.external_subscription_id, event.code, ms, event.properties)


def _ms_decimal(ms: int) -> Decimal:
    return Decimal(ms) / 1000


def _decode_generic(body: bytes) -> Any:
    try:
        return _decode_any(body)
    except msgspec.DecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from exc


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
