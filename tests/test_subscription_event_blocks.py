"""The subscription block log stays one row per subscription (ClickHouse).

int_subscription_event_blocks appends, at each close, the latest insert block of every
subscription with events loaded since the previous close. As a plain MergeTree it grew
by every close's subscriptions (a year of daily closes over 100 000 subscriptions:
36.5 M rows and a second per close to read, docs/performance.md); it is a
ReplacingMergeTree on (events table, subscription) keeping the highest block, so merges
leave one row per subscription. A store whose log was created as a plain MergeTree has
it copied into the new engine by the next close (macro upgrade_log_engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import build_drafts, close_variables, load_inputs
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.test_late_usage_reads import CATALOG, LateStore, _call

LOG = "billhouse.int_subscription_event_blocks"
MAX_PER_SUBSCRIPTION = (
    f"select external_subscription_id, max(last_block) as last_block, max(scanned_through_block) as scanned"
    f" from {LOG} group by external_subscription_id order by external_subscription_id"
)


def _close(settings: Settings, day: int) -> None:
    build_drafts(settings, close_variables(datetime(2026, 11, day, 0, 5, tzinfo=timezone.utc)))


def _load(settings: Settings, day: int) -> None:
    catalog = parse_catalog(CATALOG, source="tests/test_subscription_event_blocks.py")
    events = [_call(f"{sub}-{day}", sub, f"2026-11-{day:02d}T12:00:00Z") for sub in ("sub_late", "sub_resend")]
    LateStore(settings, catalog, {}, {}).load(events, ingested_at=f"2026-11-{day:02d}T13:00:00Z")


def _log(settings: Settings) -> tuple[str, int, list[dict]]:
    with open_warehouse(settings) as warehouse:
        [table] = warehouse.query(
            "select engine from system.tables where database = 'billhouse' and name = 'int_subscription_event_blocks'"
        )
        rows = int(warehouse.client.command(f"select count() from {LOG}"))
        return table["engine"], rows, warehouse.query(MAX_PER_SUBSCRIPTION)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("event-blocks")))
    load_inputs(settings, parse_catalog(CATALOG, source="tests/test_subscription_event_blocks.py"), [])
    _close(settings, 1)  # the log's first build: its marker only
    for day in (2, 3, 4):  # each day's events, then that day's close
        _load(settings, day)
        _close(settings, day + 1)
    yield settings


def test_merges_leave_one_row_per_subscription(settings: Settings) -> None:
    engine, _, before = _log(settings)
    assert engine == "ReplacingMergeTree"
    assert [row["external_subscription_id"] for row in before] == ["", "sub_late", "sub_resend"]
    with open_warehouse(settings) as warehouse:
        warehouse.client.command(f"optimize table {LOG} final")
    _, merged, after = _log(settings)
    # four closes appended 10 rows (a marker each, both subscriptions in three): merged,
    # one row per subscription and one marker are left (a plain MergeTree keeps 10)
    assert merged == 3
    assert [(r["external_subscription_id"], r["last_block"]) for r in after] == [
        (r["external_subscription_id"], r["last_block"]) for r in before
    ]


def test_a_log_created_as_a_plain_merge_tree_is_upgraded_by_the_next_close(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        client = warehouse.client
        client.command(f"create table {LOG}__plain engine = MergeTree order by tuple() as select * from {LOG}")
        client.command(f"exchange tables {LOG} and {LOG}__plain")
        client.command(f"drop table {LOG}__plain sync")
    engine, _, before = _log(settings)
    assert engine == "MergeTree"

    _load(settings, 5)
    _close(settings, 6)

    engine, _, after = _log(settings)
    assert engine == "ReplacingMergeTree"
    before_blocks = {r["external_subscription_id"]: r["last_block"] for r in before}
    after_blocks = {r["external_subscription_id"]: r["last_block"] for r in after}
    # the kept rows, and Nov 5's events appended above them
    assert after_blocks.keys() == before_blocks.keys()
    assert all(after_blocks[sub] > before_blocks[sub] for sub in ("sub_late", "sub_resend"))
    assert after_blocks[""] > before_blocks[""]
