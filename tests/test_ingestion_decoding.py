"""One event schema: the API's fast path agrees with ``validate_event`` on every input.

Hypothesis generates events mixing valid and invalid ids, timestamps (ints, floats,
ISO strings with offsets, numeric strings, junk) and properties; whenever the fast path
answers, its rows must equal the reference path's (``validate_event``), and when the
reference path refuses, the fast path must not have answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billhouse.catalog import parse_catalog
from billhouse.errors import EventError
from ingestion.decoding import WireBatch, decode_batch, fast_rows, reference_rows

from .conftest import CATALOG

CATALOG_OBJ = parse_catalog(CATALOG)
NOW_MS = 1_793_491_200_123

ids = st.one_of(st.text(min_size=0, max_size=8), st.sampled_from([" ", "\t", "x" * 256, "sub_a"]))
instants = st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(2400, 1, 1),
                        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                                   timezone(-timedelta(hours=8))]))
timestamps = st.one_of(
    st.none(),
    st.integers(min_value=-3_000_000_000, max_value=11_000_000_000),
    st.floats(min_value=-1e10, max_value=2e10, allow_nan=False),
    instants.map(lambda d: d.isoformat()),
    instants.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    instants.map(lambda d: d.replace(tzinfo=None).isoformat()),
    st.from_regex(r"[0-9]{1,11}(\.[0-9]{1,6})?", fullmatch=True),
    st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", ""]),
)
properties = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                                                   st.text(max_size=5), st.booleans(), st.none()), max_size=4),
    st.fixed_dictionaries({"gb": st.one_of(st.just("2.5"), st.just("lots"), st.integers(), st.booleans())}),
)
events = st.fixed_dictionaries(
    {"transaction_id": ids, "external_subscription_id": ids,
     "code": st.sampled_from(["api_calls", "storage_gb", "tokens", "other", ""])},
    optional={"timestamp": timestamps, "properties": properties},
)


def reference(raw_events: list[dict]) -> list | EventError:
    try:
        return reference_rows(raw_events, NOW_MS, CATALOG_OBJ)
    except EventError as error:
        return error


@settings(max_examples=600, deadline=None)
@given(st.lists(events, min_size=1, max_size=4))
def test_the_fast_path_answers_exactly_as_validate_event(raw_events: list[dict]) -> None:
    body = msgspec.json.encode({"events": raw_events})
    expected = reference(msgspec.json.decode(body)["events"])
    try:
        wire = msgspec.json.decode(body, type=WireBatch).events
    except msgspec.ValidationError:
        return  # not plain-shaped: only the reference path runs
    try:
        fast = fast_rows(wire, NOW_MS, CATALOG_OBJ)
    except EventError as error:  # the catalog rule, raised by the same function
        assert isinstance(expected, EventError)
        assert (error.index, error.field, error.reason) == (expected.index, expected.field, expected.reason)
        return
    if fast is not None:
        assert fast == expected


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        (1793491200, 1793491200000),
        (1793491200.9999, 1793491200999),  # truncated to the millisecond, never rounded up
        ("1793491200.5", 1793491200500),  # Lago: Unix seconds as a string
        ("2026-11-01T00:00:00Z", 1793491200000),
        ("2026-11-01T05:30:00.0015+05:30", 1793491200001),
        (-1, -1000),
    ],
)
def test_timestamps_become_utc_milliseconds(timestamp, expected_ms) -> None:
    body = msgspec.json.encode({"events": [{"transaction_id": "t", "external_subscription_id": "s",
                                            "code": "c", "timestamp": timestamp}]})
    assert decode_batch(body, 100)[0][3] == expected_ms
