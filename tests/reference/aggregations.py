"""Reference billable-metric aggregations (semantics.md, "Billable metrics").

An event is a dict: transaction_id, external_subscription_id, timestamp, properties
and optionally code. Timestamps may be tz-aware datetimes, ISO 8601 strings or Unix
seconds (int); naive datetimes are UTC.

Choices where semantics.md is silent:

* The list order of events is the acceptance order. `dedupe` keeps the first event
  per (external_subscription_id, transaction_id) over *all* events, before filtering
  by code or period: a later copy never counts, even if its code/timestamp differ.
* Field values are Decimal: int, str or Decimal are accepted; a float is converted
  through its shortest repr (str(float)); bool, None, a missing key or a
  non-numeric string raises `InvalidEventValue` (an ingestion-time error, never 0).
* unique_count_agg compares values by their string form (1 and "1" are one value).
  operation_type is "add" (default when absent) or "remove"; events apply in
  (timestamp, acceptance) order. Non-recurring: the number of distinct values with
  an add event in the period (remove events are ignored). Recurring: a value counts
  if it was active at any instant of the period, i.e. active at period start
  (``initially_active``) or added during it; a removal takes effect for the next
  period (`unique_count_active_at_end` gives the carried-over set).
* latest_agg: the value of the event with the greatest timestamp; on a tie the
  event accepted last wins. 0 when there is no event.
* max_agg: 0 when there is no event (the maximum of negative values stays
  negative; pricing clamps negative units to 0).
* weighted_sum_agg: events sorted by (timestamp, acceptance order); the level
  starts at ``initial_level`` (0 unless recurring, then the previous period's end
  level: `weighted_sum_level_at_end`), jumps by each event's value at its instant,
  and the result is sum(level x seconds) / period seconds, computed with 60
  significant digits (compare with the SQL at 1e-12).
* rounding: round = half away from zero; ceil/floor toward +/- infinity;
  rounding_precision is the number of decimals (None = 0, negative allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_UP,
    Decimal,
    InvalidOperation,
    localcontext,
)
from typing import Any

__all__ = [
    "InvalidEventValue",
    "Event",
    "parse_timestamp",
    "dedupe",
    "select_period",
    "field_value",
    "count_agg",
    "sum_agg",
    "max_agg",
    "unique_count_agg",
    "unique_count_active_at_end",
    "latest_agg",
    "weighted_sum_agg",
    "weighted_sum_level_at_end",
    "apply_rounding",
]

Event = Mapping[str, Any]
_PREC = 60


class InvalidEventValue(ValueError):
    """An event's field is missing or not numeric (an ingestion-time error)."""


def parse_timestamp(value: Any) -> datetime:
    """datetime | ISO 8601 string | Unix seconds (int) -> aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise TypeError(f"unsupported timestamp {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def dedupe(events: Iterable[Event]) -> list[Event]:
    """Keep the first accepted event per (external_subscription_id, transaction_id)."""
    seen: set[tuple[Any, Any]] = set()
    kept: list[Event] = []
    for e in events:
        key = (e["external_subscription_id"], e["transaction_id"])
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept


def select_period(
    events: Iterable[Event],
    period_start: Any,
    period_end: Any,
    code: str | None = None,
    external_subscription_id: str | None = None,
) -> list[Event]:
    """Deduplicate, then keep events of ``code`` with timestamp in [start, end)."""
    start, end = parse_timestamp(period_start), parse_timestamp(period_end)
    return [
        e
        for e in dedupe(events)
        if (code is None or e.get("code") == code)
        and (
            external_subscription_id is None
            or e["external_subscription_id"] == external_subscription_id
        )
        and start <= parse_timestamp(e["timestamp"]) < end
    ]


def field_value(event: Event, field_name: str) -> Decimal:
    """The event's property as Decimal; raises `InvalidEventValue`."""
    props = event.get("properties") or {}
    if field_name not in props:
        raise InvalidEventValue(f"{event.get('transaction_id')}: missing {field_name!r}")
    raw = props[field_name]
    if raw is None or isinstance(raw, bool):
        raise InvalidEventValue(f"{event.get('transaction_id')}: {field_name}={raw!r}")
    if isinstance(raw, float):
        raw = repr(raw)
    if not isinstance(raw, (int, str, Decimal)):
        raise InvalidEventValue(f"{event.get('transaction_id')}: {field_name}={raw!r}")
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise InvalidEventValue(
            f"{event.get('transaction_id')}: {field_name}={raw!r} is not a number"
        ) from None
    if not value.is_finite():
        raise InvalidEventValue(f"{event.get('transaction_id')}: {field_name}={raw!r}")
    # read to 12 decimal places, further digits dropped (semantics: a property's value)
    with localcontext() as context:
        context.prec = 100
        return value.quantize(Decimal("1e-12"), rounding=ROUND_DOWN)


def _ordered(events: Sequence[Event]) -> list[Event]:
    """Stable sort by timestamp: ties keep acceptance order."""
    return [
        e
        for _, e in sorted(
            enumerate(events), key=lambda ie: (parse_timestamp(ie[1]["timestamp"]), ie[0])
        )
    ]


def count_agg(events: Sequence[Event]) -> Decimal:
    return Decimal(len(events))


def sum_agg(events: Sequence[Event], field_name: str) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _PREC
        return sum((field_value(e, field_name) for e in events), Decimal(0))


def max_agg(events: Sequence[Event], field_name: str) -> Decimal:
    if not events:
        return Decimal(0)
    return max(field_value(e, field_name) for e in events)


def _unique_key(event: Event, field_name: str) -> str:
    props = event.get("properties") or {}
    if field_name not in props or props[field_name] is None:
        raise InvalidEventValue(f"{event.get('transaction_id')}: missing {field_name!r}")
    return str(props[field_name])


def _operation(event: Event) -> str:
    op = (event.get("properties") or {}).get("operation_type", "add") or "add"
    if op not in ("add", "remove"):
        raise InvalidEventValue(f"{event.get('transaction_id')}: operation_type={op!r}")
    return str(op)


def unique_count_agg(
    events: Sequence[Event],
    field_name: str,
    recurring: bool = False,
    initially_active: Iterable[str] = (),
) -> Decimal:
    """Distinct values (see module docstring for add/remove and recurring)."""
    counted: set[str] = set(initially_active) if recurring else set()
    for e in _ordered(events):
        if _operation(e) == "add":
            counted.add(_unique_key(e, field_name))
    return Decimal(len(counted))


def unique_count_active_at_end(
    events: Sequence[Event], field_name: str, initially_active: Iterable[str] = ()
) -> frozenset[str]:
    """Values still added at period end: the next recurring period's start set."""
    active = set(initially_active)
    for e in _ordered(events):
        key = _unique_key(e, field_name)
        if _operation(e) == "add":
            active.add(key)
        else:
            active.discard(key)
    return frozenset(active)


def latest_agg(events: Sequence[Event], field_name: str) -> Decimal:
    if not events:
        return Decimal(0)
    return field_value(_ordered(events)[-1], field_name)


def weighted_sum_agg(
    events: Sequence[Event],
    field_name: str,
    period_start: Any,
    period_end: Any,
    initial_level: Decimal = Decimal(0),
) -> Decimal:
    """Time-weighted average level over [start, end) in seconds."""
    start, end = parse_timestamp(period_start), parse_timestamp(period_end)
    if end <= start:
        raise ValueError("empty period")
    with localcontext() as ctx:
        ctx.prec = _PREC
        level = Decimal(initial_level)
        cursor = start
        integral = Decimal(0)
        for e in _ordered(events):
            ts = parse_timestamp(e["timestamp"])
            if not start <= ts < end:
                raise ValueError("event outside the period; use select_period first")
            integral += level * _seconds(ts - cursor)
            cursor = ts
            level += field_value(e, field_name)
        integral += level * _seconds(end - cursor)
        return integral / _seconds(end - start)


def weighted_sum_level_at_end(
    events: Sequence[Event], field_name: str, initial_level: Decimal = Decimal(0)
) -> Decimal:
    """The running level at period end (carried over when recurring)."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return Decimal(initial_level) + sum_agg(events, field_name)


def _seconds(delta: Any) -> Decimal:
    """Exact seconds of a timedelta (microsecond resolution)."""
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def apply_rounding(
    value: Decimal, rounding_function: str | None, rounding_precision: int | None
) -> Decimal:
    """round (half away from zero) / ceil / floor to ``rounding_precision`` decimals."""
    if rounding_function is None:
        return value
    modes = {"round": ROUND_HALF_UP, "ceil": ROUND_CEILING, "floor": ROUND_FLOOR}
    if rounding_function not in modes:
        raise ValueError(f"unknown rounding_function {rounding_function!r}")
    with localcontext() as ctx:
        ctx.prec = _PREC
        quantum = Decimal(1).scaleb(-(rounding_precision or 0))
        result = value.quantize(quantum, rounding=modes[rounding_function])
        # Negative precision yields e.g. 1.2E+3; normalize to a plain integer form.
        return result if (rounding_precision or 0) >= 0 else Decimal(int(result))
