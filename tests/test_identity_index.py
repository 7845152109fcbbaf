"""The identity index (billhouse/identity_index.py) against a Python set, and its sync
with the store (billhouse/identity_sync.py): what a close logs as duplicated, after
crashes and hand edits included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.events import load_events
from billhouse.identity_index import IdentityIndex
from billhouse.identity_sync import LOG_TABLE, sync_identity_index
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import CATALOG, FIRST_BATCH, _event

# small values so that batches repeat each other's hashes; the top of the range too
hash_values = st.one_of(st.integers(0, 400), st.integers(2**64 - 50, 2**64 - 1))
batches = st.lists(st.lists(hash_values, max_size=120), min_size=1, max_size=12)


def _sorted(values: list[int]) -> np.ndarray:
    return np.sort(np.array(values, dtype=np.uint64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_the_index_answers_as_a_set_of_every_saved_hash(tmp_path_factory: pytest.TempPathFactory, batches) -> None:
    directory = tmp_path_factory.mktemp("index")
    index = IdentityIndex.open(directory)
    seen: set[int] = set()
    saved = 0
    probe = _sorted(list(range(0, 410)) + list(range(2**64 - 60, 2**64)))
    for number, batch in enumerate(batches):
        index.save(np.unique(_sorted(batch)), {"through_block": number})
        saved += len(set(batch))
        seen |= set(batch)
        expected = [int(value) in seen for value in probe]
        assert index.contains(probe).tolist() == expected
        reopened = IdentityIndex.open(directory)
        assert reopened.contains(probe).tolist() == expected
        assert reopened.covers == {"through_block": number}
        # merged as they come: each run more than twice the next, so about log2 of the hashes
        assert index.run_count <= max(saved, 1).bit_length() + 1
        assert sorted(p.name for p in directory.glob("run-*.npy")) == sorted(index._runs)
        for name in index._runs:
            run = np.load(directory / name)
            assert run.dtype == np.uint64 and bool(np.all(run[1:] >= run[:-1]))


def test_a_run_written_before_a_crash_is_not_used_and_is_removed(tmp_path: Path) -> None:
    index = IdentityIndex.open(tmp_path)
    index.save(_sorted([1, 2, 3]), {"through_block": 1})
    index._write_run(_sorted([7, 8, 9]))  # a crash before the state names it
    reopened = IdentityIndex.open(tmp_path)
    assert reopened.contains(_sorted([3, 7])).tolist() == [True, False]
    reopened.save(_sorted([4]), {"through_block": 2})
    assert reopened.contains(_sorted([4, 7])).tolist() == [True, False]
    assert len(list(tmp_path.glob("run-*.npy"))) == reopened.run_count


# --- the sync with a store -----------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    load_inputs(settings, parse_catalog(CATALOG, source="tests/conftest.py"), FIRST_BATCH)
    return settings


def _load(settings: Settings, events: list[dict]) -> None:
    with open_warehouse(settings) as warehouse:
        load_events(warehouse, events, parse_catalog(CATALOG, source="tests/conftest.py"))


def _log(settings: Settings) -> list[dict]:
    with open_warehouse(settings) as warehouse:
        return warehouse.query(
            f"select identity_hash, copies, scanned_through_block from billhouse_raw.{LOG_TABLE}"
            " order by scanned_through_block, identity_hash"
        )


def _duplicated_in_store(settings: Settings) -> set[int]:
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query("select identity_hash as h from billhouse_raw.events group by h having count() > 1")
    return {row["h"] for row in rows}


def _sync(settings: Settings):
    with open_warehouse(settings) as warehouse:
        return sync_identity_index(warehouse, settings.identity_index_dir)


def test_each_sync_logs_what_the_events_stored_since_duplicate(store: Settings) -> None:
    first = _sync(store)
    assert first.rebuilt and first.events > 0
    logged = {row["identity_hash"] for row in _log(store) if row["copies"] > 1}
    assert logged == _duplicated_in_store(store) and logged, "FIRST_BATCH resends events"

    assert _sync(store).events == 0, "nothing stored since: nothing read"
    _load(store, [
        _event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),
        _event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),  # twice in one load
        _event("a-nov-2", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),
    ])
    _load(store, [_event("a-nov-2", "sub_a", "api_calls", "2026-11-09T00:00:00Z")])  # resent later
    second = _sync(store)
    assert (second.events, second.duplicated, second.rebuilt) == (4, 2, False)
    log = _log(store)
    assert {row["identity_hash"] for row in log if row["copies"] > 1} == _duplicated_in_store(store)
    markers = [row["scanned_through_block"] for row in log if row["copies"] == 0]
    assert markers == sorted(markers) and markers[-1] == second.through_block and len(markers) == 2


def test_a_crash_before_the_index_is_saved_logs_the_same_blocks_again(
    store: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sync(store)
    _load(store, [_event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z")] * 2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(IdentityIndex, "save", crash)
    with pytest.raises(OSError):
        _sync(store)
    monkeypatch.undo()
    assert _sync(store).duplicated == 1, "the index had not recorded the blocks: read again"
    assert {row["identity_hash"] for row in _log(store) if row["copies"] > 1} == _duplicated_in_store(store)


def test_an_index_ahead_of_its_log_is_rebuilt(store: Settings) -> None:
    _sync(store)
    with open_warehouse(store) as warehouse:
        warehouse.client.command(f"truncate table billhouse_raw.{LOG_TABLE}")
    _load(store, [_event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z")])
    again = _sync(store)
    assert again.rebuilt, "the log lost what the index covers: the index starts over"
    assert {row["identity_hash"] for row in _log(store) if row["copies"] > 1} == _duplicated_in_store(store)


def test_a_rebuild_reads_a_partition_at_a_time_and_finds_copies_across_them(store: Settings) -> None:
    _load(store, [
        _event("x-1", "sub_a", "api_calls", "2026-10-15T00:00:00Z"),
        _event("x-1", "sub_a", "api_calls", "2026-11-15T00:00:00Z"),  # the copy, a month later
        _event("x-1", "sub_a", "api_calls", "2026-11-01T00:00:00Z"),  # and on a month's first day
    ])
    with open_warehouse(store) as warehouse:
        partitions = {row["p"] for row in warehouse.query(
            "select distinct _partition_id as p from billhouse_raw.events"
            " where transaction_id = 'x-1'"
        )}
    assert len(partitions) == 3
    rebuilt = _sync(store)
    assert rebuilt.rebuilt
    assert {row["identity_hash"] for row in _log(store) if row["copies"] > 1} == _duplicated_in_store(store)
    index = IdentityIndex.open(store.identity_index_dir)
    assert index.covers == {"events_table_uuid": _events_uuid(store), "through_block": rebuilt.through_block}


def _events_uuid(settings: Settings) -> str:
    with open_warehouse(settings) as warehouse:
        [row] = warehouse.query(
            "select toString(uuid) as u from system.tables where database = 'billhouse_raw' and name = 'events'"
        )
    return row["u"]
