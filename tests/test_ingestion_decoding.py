"""One event schema: the API's fast path agrees with ``validate_event`` on every input.

Hypothesis generates events mixing valid and invalid ids, timestamps (ints, floats,
ISO strings with offsets, numeric strings, junk) and properties; whenever the fast path
answers, its rows must equal the reference path's (``validate_event``), and when the
reference path refuses, the fast path must not have answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billhouse.catalog import parse_catalog
from billhouse.errors import EventError
from ingestion.decoding import WireBatch, check_batch, decode_batch, decode_single, fast_rows, reference_rows
from ingestion.dedup import DuplicateIndex, identity_key
from ingestion.segments import body_frame_rows, encode_body_frame, HEADER

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
    expected = reference(msgspec.json.Decoder(float_hook=Decimal).decode(body)["events"])
    try:
        wire = msgspec.json.Decoder(WireBatch, float_hook=Decimal).decode(body).events
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


def _error_of(call) -> tuple | None:
    try:
        call()
    except EventError as error:
        return (error.index, error.field, error.reason)
    return None


@settings(max_examples=600, deadline=None)
@given(st.lists(events, min_size=1, max_size=4), st.sampled_from([None, CATALOG_OBJ]))
def test_check_batch_accepts_and_refuses_exactly_as_decode_batch(raw_events: list[dict], catalog) -> None:
    """The API's batch check (no rows on its fast path) agrees with ``decode_batch``:
    same error, or the same identities — and a body it lands as is decodes later to the
    very rows ``decode_batch`` gives for the arrival instant it recorded."""
    body = msgspec.json.encode({"events": raw_events})
    checked = None

    def check() -> None:
        nonlocal checked
        checked = check_batch(body, 100, catalog)

    error = _error_of(check)
    if checked is None:
        assert error is not None
        assert _error_of(lambda: decode_batch(body, 100, catalog)) == error
        return
    rows = decode_batch(body, 100, catalog, now_ms=checked.now_ms)
    assert checked.count == len(rows)
    assert checked.identities == [identity_key(r[1], r[0]) for r in rows]
    if checked.rows is not None:
        assert checked.rows == rows
    else:  # landed as its body: the loader's rows are decode_batch's
        frame = encode_body_frame(body, checked.now_ms, checked.count, 1)
        assert body_frame_rows(frame[HEADER.size :], checked.count) == rows


def test_the_plain_fast_path_lands_the_body_and_anything_unusual_gets_rows() -> None:
    plain = {"transaction_id": "t1", "external_subscription_id": "s", "code": "c", "timestamp": 1793491200,
             "properties": {"b": 1, "a": "x"}}
    assert check_batch(msgspec.json.encode({"events": [plain]}), 100).rows is None
    for unusual in ({"timestamp": "2026-11-01T00:00:00Z"}, {"timestamp": 1.5}, {"properties": None}):
        checked = check_batch(msgspec.json.encode({"events": [{**plain, **unusual}]}), 100)
        if "properties" not in unusual:
            assert checked.rows is not None, unusual
    for holding_nul in ({"external_subscription_id": "s\x00"}, {"transaction_id": "\x00t"}, {"code": "c\x00"}):
        with pytest.raises(EventError) as refused:  # PostgreSQL text holds no NUL
            check_batch(msgspec.json.encode({"events": [{**plain, **holding_nul}]}), 100)
        assert refused.value.field == next(iter(holding_nul)) and "NUL character" in str(refused.value)


def test_numbers_are_stored_with_every_digit_they_were_sent_with() -> None:
    """A JSON number with more digits than a double holds is stored as the decimal it
    spells, on every path a body takes (batch, single event, landed body, reference)."""
    number = b"123456789012345678.123456789012"
    event = (b'{"transaction_id": "t1", "external_subscription_id": "s", "code": "c", "timestamp": 1793491200,'
             b' "properties": {"gb": ' + number + b', "tiny": 1e-7, "calls": 12345678901234567890123}}')
    stored = '{"calls": 12345678901234567890123, "gb": "123456789012345678.123456789012", "tiny": "1E-7"}'
    batch = b'{"events": [' + event + b"]}"
    assert decode_batch(batch, 100)[0][4] == stored
    assert decode_single(b'{"event": ' + event + b"}")[4] == stored
    checked = check_batch(batch, 100)
    frame = encode_body_frame(batch, checked.now_ms, checked.count, 1)
    assert body_frame_rows(frame[HEADER.size :], checked.count)[0][4] == stored
    with_iso_timestamp = batch.replace(b"1793491200", b'"2026-11-01T00:00:00Z"')
    assert decode_batch(with_iso_timestamp, 100)[0][4] == stored  # the reference path


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (("s", "t"), ("s", "t"), True),
        (("s", "t\x00x"), ("s\x00t", "x"), False),  # a NUL in the subscription id cannot collide
        (("s\x00t", "x"), ("s\x00t", "x"), True),
        (("ab", "c"), ("a", "bc"), False),
    ],
)
def test_identity_keys_are_equal_exactly_for_equal_identities(first, second, same) -> None:
    index = DuplicateIndex()
    index.add(*first)
    assert index.add(*second) is same
    assert index.mark_keys([identity_key(*first), identity_key(*first)]) == [0, 1]


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
