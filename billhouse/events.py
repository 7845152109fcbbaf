"""Usage events: validation and the one function that appends them to the warehouse.

Every path that brings events in (the demo, ``simulate``, the HTTP API) goes through
``load_events``. Events are appended as they come; the same
(external_subscription_id, transaction_id) sent twice is stored twice and counted once
by the models (the first accepted copy wins — see docs/semantics.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol

from billhouse.catalog import Catalog, parse_instant
from billhouse.errors import EventError
from billhouse.property_numbers import PROPERTY_INTEGER_DIGITS, PROPERTY_MAGNITUDE_LIMIT, property_number

MAX_ID_LENGTH = 255
# Text a warehouse cannot store: PostgreSQL holds no NUL in text and reads none in jsonb,
# and an unpaired UTF-16 surrogate is not UTF-8 at all (the API's JSON decoder already
# refuses one; Python's, behind `billhouse load` and simulate, does not). An event holding
# either would stop every load (ids) or every close reading it (properties).
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_TEXT_REFUSAL = (
    "must not contain the NUL character (\\u0000) or an unpaired surrogate (\\ud800-\\udfff):"
    " a warehouse cannot store it"
)


@dataclass(frozen=True)
class Event:
    transaction_id: str
    external_subscription_id: str
    code: str
    timestamp: datetime  # UTC, millisecond precision
    properties: str  # JSON object text; numbers kept as written (no float round-trip)


class EventSink(Protocol):
    def append_events(self, events: list[Event], ingested_at: datetime) -> None: ...


def validate_event(index: int, raw: Mapping[str, Any], catalog: Catalog | None = None) -> Event:
    """Check one event in Lago's shape; raise EventError naming the index and field."""
    if not isinstance(raw, Mapping):
        raise EventError(index, "(event)", "must be an object")
    ids = {}
    for key in ("transaction_id", "external_subscription_id", "code"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise EventError(index, key, "is required and must be a non-empty string")
        if len(value) > MAX_ID_LENGTH:
            raise EventError(index, key, f"is longer than {MAX_ID_LENGTH} characters")
        if _UNSTORABLE_TEXT.search(value):
            raise EventError(index, key, UNSTORABLE_TEXT_REFUSAL)
        ids[key] = value
    timestamp = _timestamp(index, raw.get("timestamp"))
    properties = raw.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise EventError(index, "properties", "must be an object")
    if catalog is not None:
        check_metric_field(index, ids["code"], properties, catalog)
    if _holds_unstorable_text(properties):  # after the field check, in the fast path's order
        raise EventError(index, "properties", UNSTORABLE_TEXT_REFUSAL)
    return Event(
        transaction_id=ids["transaction_id"],
        external_subscription_id=ids["external_subscription_id"],
        code=ids["code"],
        timestamp=timestamp,
        properties=json.dumps(properties, sort_keys=True, default=json_number),
    )


def validate_events(raw_events: Iterable[Mapping[str, Any]], catalog: Catalog | None = None) -> list[Event]:
    return [validate_event(i, raw, catalog) for i, raw in enumerate(raw_events)]


def load_events(
    sink: EventSink,
    raw_events: Iterable[Mapping[str, Any]],
    catalog: Catalog | None = None,
    ingested_at: datetime | None = None,
) -> int:
    """Validate every event, then append them all; all or nothing. Returns the count."""
    events = validate_events(raw_events, catalog)
    if events:
        sink.append_events(events, ingested_at or datetime.now(timezone.utc))
    return len(events)


# What the warehouse's DateTime64(3) holds.
EARLIEST_TIMESTAMP = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST_TIMESTAMP = datetime(2299, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
_UNIX_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")


def _timestamp(index: int, value: Any) -> datetime:
    if value is None:
        moment = datetime.now(timezone.utc)
    else:
        if isinstance(value, float):
            value = Decimal(repr(value))
        elif isinstance(value, str) and _UNIX_SECONDS.match(value):
            value = Decimal(value)  # Lago's clients send Unix seconds as a string
        try:
            moment = parse_instant(value)
        except (ValueError, OverflowError) as exc:
            raise EventError(index, "timestamp", f"{exc} (use ISO 8601 or Unix seconds)") from exc
    if not EARLIEST_TIMESTAMP <= moment <= LATEST_TIMESTAMP:
        raise EventError(index, "timestamp", f"{moment.isoformat()} is not between 1900-01-01 and 2299-12-31")
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _holds_unstorable_text(value: Any) -> bool:
    """Whether a decoded JSON value holds a NUL or a surrogate in a string or a key, at any depth."""
    if isinstance(value, str):
        return _UNSTORABLE_TEXT.search(value) is not None
    if isinstance(value, Mapping):
        return any(_UNSTORABLE_TEXT.search(key) or _holds_unstorable_text(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_unstorable_text(item) for item in value)
    return False


def check_metric_field(index: int, code: str, properties: Mapping[str, Any], catalog: Catalog) -> None:
    metric = catalog.metric(code)
    if metric is None or metric.aggregation_type == "count_agg" or not metric.field_name:
        return
    value = properties.get(metric.field_name)
    field = f"properties.{metric.field_name}"
    if value is None:
        raise EventError(index, field, f"is required by billable metric {code!r} ({metric.aggregation_type})")
    if metric.aggregation_type in ("sum_agg", "max_agg", "latest_agg", "weighted_sum_agg"):
        # exactly what the warehouses read as a number (billhouse/property_numbers.py):
        # Python's Decimal alone also takes '1_000', non-ASCII digits and tabs, which
        # they would read as null, billing the event as 0
        number = property_number(value)
        if number is None:
            raise EventError(
                index, field,
                f"must be a number or a numeric string (ASCII digits, an optional sign, decimal point"
                f" and exponent), got {value!r}",
            )
        if abs(number) >= PROPERTY_MAGNITUDE_LIMIT:
            raise EventError(index, field, f"must be below 10^{PROPERTY_INTEGER_DIGITS} in magnitude, got {value!r}")


def json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # a decimal string: never through float
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {value!r}")
