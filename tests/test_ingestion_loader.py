"""The loader lands each frame exactly once, whatever step a crash interrupts.

Segments are written with the landing format directly (no server); the loader runs
against a real chDB store. A "crash" is a loader abandoned between two of its steps
(begin → insert → commit); the next run must settle it from the warehouse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.loader import LandedEventsLoader, load_landed_events
from ingestion.segments import encode_frame, segment_name

T0 = 1_793_491_200_000_000  # ingested_at µs


def rows(prefix: str, n: int) -> list[tuple]:
    return [(f"{prefix}-{i}", "sub_a", "api_calls", 1_793_491_200_000 + i, "{}") for i in range(n)]


def write_segment(landing: Path, frames: list[tuple[int, list]], tail: bytes = b"") -> Path:
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / segment_name(frames[0][0])
    path.write_bytes(b"".join(encode_frame(r, at) for at, r in frames) + tail)
    return path


def stored(warehouse) -> dict[str, int]:
    result = warehouse.query("select transaction_id, count() as n from billhouse_raw.events group by transaction_id")
    return {r["transaction_id"]: r["n"] for r in result}


@pytest.fixture
def store(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    with open_warehouse(settings) as warehouse:
        yield warehouse, tmp_path / "landing"


def test_a_crash_after_the_insert_does_not_load_the_chunk_twice(store) -> None:
    warehouse, landing = store
    write_segment(landing, [(T0, rows("a", 3)), (T0 + 1, rows("b", 2))])
    crashed = LandedEventsLoader(warehouse, landing)
    chunk = next(crashed.chunks())
    crashed.begin(chunk)
    crashed.insert(chunk)  # ... and the process dies before commit
    report = load_landed_events(warehouse, landing)
    assert report.rows == 0
    assert report.recovered == [f"{segment_name(T0)}@0: was loaded, offset advanced"]
    assert stored(warehouse) == {t: 1 for t in ("a-0", "a-1", "a-2", "b-0", "b-1")}


def test_a_crash_before_the_insert_loads_the_chunk_once(store) -> None:
    warehouse, landing = store
    write_segment(landing, [(T0, rows("a", 3))])
    crashed = LandedEventsLoader(warehouse, landing)
    crashed.begin(next(crashed.chunks()))  # dies before inserting
    report = load_landed_events(warehouse, landing)
    assert report.rows == 3
    assert "was not loaded" in report.recovered[0]
    assert stored(warehouse) == {"a-0": 1, "a-1": 1, "a-2": 1}


def test_a_torn_tail_is_left_until_it_is_complete_and_frames_load_once(store) -> None:
    warehouse, landing = store
    complete = encode_frame(rows("c", 2), T0 + 10)
    path = write_segment(landing, [(T0, rows("a", 1))], tail=complete[:-3])  # being written, or torn
    assert load_landed_events(warehouse, landing).rows == 1
    assert load_landed_events(warehouse, landing).rows == 0
    path.write_bytes(path.read_bytes()[: -len(complete) + 3] + complete)  # the writer finishes it
    assert load_landed_events(warehouse, landing).rows == 2
    corrupt = bytearray(encode_frame(rows("d", 1), T0 + 11))
    corrupt[-1] ^= 0xFF  # CRC mismatch: never acknowledged, never loaded
    path.write_bytes(path.read_bytes() + bytes(corrupt))
    assert load_landed_events(warehouse, landing).rows == 0
    write_segment(landing, [(T0 + 20, rows("e", 2))])  # the restarted server's new segment
    assert load_landed_events(warehouse, landing).rows == 2
    assert stored(warehouse) == {"a-0": 1, "c-0": 1, "c-1": 1, "e-0": 1, "e-1": 1}


def test_each_chunk_is_one_insert_committed_as_one_part(store) -> None:
    warehouse, landing = store
    write_segment(landing, [(T0 + i, rows(f"f{i}", 100)) for i in range(3000)])
    parts_before = warehouse.query("select count() as n from system.parts where database = 'billhouse_raw'"
                                   " and table = 'events' and active")[0]["n"]
    report = load_landed_events(warehouse, landing)
    assert (report.rows, report.chunks) == (300_000, 1)
    parts_after = warehouse.query("select count() as n from system.parts where database = 'billhouse_raw'"
                                  " and table = 'events' and active")[0]["n"]
    assert parts_after - parts_before == 1
    row = warehouse.query("select timestamp, ingested_at from billhouse_raw.events where transaction_id = 'f2-5'")[0]
    assert row["timestamp"].isoformat().startswith("2026-11-01T00:00:00.005")
    assert row["ingested_at"].isoformat().startswith("2026-11-01T00:00:00.000002")
