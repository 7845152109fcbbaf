"""The day totals of the raw events (billhouse/event_day_totals.py) cover exactly the
events table's rows: kept at every insert by the materialized view, and rebuilt when the
store is opened and they do not (a store from before them, an events table re-created,
totals that lost an insert). The close's use of them is checked against reading every
event in tests/test_event_buckets.py."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from billhouse.event_day_totals import MONTH_TABLE, MONTH_VIEW, TABLE, VIEW, partition_key, table_ddl
from billhouse.events import Event
from billhouse.raw_tables import RAW_SCHEMA
from billhouse.settings import Settings
from billhouse.warehouse import Warehouse, open_warehouse

INGESTED = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _event(tx: str, sub: str, code: str, at: str, properties: str) -> Event:
    return Event(tx, sub, code, datetime.fromisoformat(at.replace("Z", "+00:00")), properties)


FIRST = [
    _event("1", "sub_a", "gb", "2026-10-05T00:00:00Z", '{"gb": "2.5", "note": "x"}'),
    _event("2", "sub_a", "gb", "2026-10-05T23:59:59.999Z", '{"gb": -4}'),
    _event("3", "sub_a", "gb", "2026-10-06T00:00:00Z", '{"gb": "not a number"}'),
    _event("4", "sub_a", "calls", "2026-10-05T12:00:00Z", "{}"),
    _event("5", "sub_b", "gb", "2026-09-30T23:00:00Z", '{"gb": 0, "cpu": "1.000000000001"}'),
]
SECOND = [
    _event("1", "sub_a", "gb", "2026-10-05T03:00:00Z", '{"gb": "100"}'),  # resent: counted as stored
    _event("6", "sub_b", "gb", "2026-09-30T01:00:00Z", '{"gb": "-1", "cpu": 2}'),
]

# per (subscription, code, day): events, then each numeric property's sum and maximum
EXPECTED = {
    ("sub_a", "gb", date(2026, 10, 5)): (3, {"gb": Decimal("98.5")}, {"gb": Decimal("100")}),
    ("sub_a", "gb", date(2026, 10, 6)): (1, {}, {}),
    ("sub_a", "calls", date(2026, 10, 5)): (1, {}, {}),
    ("sub_b", "gb", date(2026, 9, 30)): (
        2,
        {"gb": Decimal("-1"), "cpu": Decimal("3.000000000001")},
        {"gb": Decimal("0"), "cpu": Decimal("2")},
    ),
}


def day_totals(
    warehouse: Warehouse, table: str = TABLE, period: str = "day"
) -> dict[tuple[str, str, date], tuple[int, dict, dict]]:
    """The totals merged per day, or per month for the month totals (a day may span
    several rows until merged)."""
    rows = warehouse.query(
        f"select external_subscription_id, code, {period} as period, sum(event_count) as events,"
        f" sumMap(number_sums) as sums, maxMap(number_maxes) as maxes from {RAW_SCHEMA}.{table} group by all"
    )
    return {
        (row["external_subscription_id"], row["code"], row["period"]):
            (int(row["events"]), {k: Decimal(v) for k, v in row["sums"].items()},
             {k: Decimal(v) for k, v in row["maxes"].items()})
        for row in rows
    }


# per (subscription, code, month): the month totals hold only the middle days' events
# (Sep 30 is September's last day: not in them)
EXPECTED_MONTHS = {
    ("sub_a", "gb", date(2026, 10, 1)): (4, {"gb": Decimal("98.5")}, {"gb": Decimal("100")}),
    ("sub_a", "calls", date(2026, 10, 1)): (1, {}, {}),
}


def month_totals(warehouse: Warehouse) -> dict[tuple[str, str, date], tuple[int, dict, dict]]:
    return day_totals(warehouse, MONTH_TABLE, "month")


def rows_per_day(warehouse: Warehouse) -> dict[tuple[str, str, date], int]:
    counts: dict[tuple[str, str, date], int] = defaultdict(int)
    for row in warehouse.query(f"select external_subscription_id, code, day, event_count from {RAW_SCHEMA}.{TABLE}"):
        counts[(row["external_subscription_id"], row["code"], row["day"])] += int(row["event_count"])
    return dict(counts)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def test_every_insert_adds_its_totals(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST, INGESTED)
        warehouse.append_events(SECOND, INGESTED)
        assert day_totals(warehouse) == EXPECTED
        assert month_totals(warehouse) == EXPECTED_MONTHS


def test_a_store_from_before_the_totals_gets_them_when_opened(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST + SECOND, INGESTED)
        for view, table in ((VIEW, TABLE), (MONTH_VIEW, MONTH_TABLE)):
            warehouse.client.command(f"drop view {RAW_SCHEMA}.{view}")
            warehouse.client.command(f"drop table {RAW_SCHEMA}.{table}")
    with open_warehouse(settings) as warehouse:
        assert day_totals(warehouse) == EXPECTED
        assert month_totals(warehouse) == EXPECTED_MONTHS
        warehouse.append_events([_event("7", "sub_a", "calls", "2026-10-05T13:00:00Z", "{}")], INGESTED)
        assert rows_per_day(warehouse)[("sub_a", "calls", date(2026, 10, 5))] == 2
        assert month_totals(warehouse)[("sub_a", "calls", date(2026, 10, 1))][0] == 2


def test_totals_that_lost_an_insert_are_rebuilt(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST, INGESTED)
        # an insert whose views did not run
        warehouse.client.command(f"drop view {RAW_SCHEMA}.{VIEW}")
        warehouse.client.command(f"drop view {RAW_SCHEMA}.{MONTH_VIEW}")
        warehouse.append_events(SECOND, INGESTED)
        assert day_totals(warehouse) != EXPECTED
        assert month_totals(warehouse) != EXPECTED_MONTHS
    with open_warehouse(settings) as warehouse:
        assert day_totals(warehouse) == EXPECTED
        assert month_totals(warehouse) == EXPECTED_MONTHS


def test_an_events_table_swapped_for_another_gets_its_own_totals(settings: Settings) -> None:
    """As a store's repartitioning swaps in a copy: the same number of events, stored
    without the view; the events table's UUID tells the two apart."""
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST, INGESTED)
        warehouse.client.command(f"create table {RAW_SCHEMA}.events_other as {RAW_SCHEMA}.events")
        warehouse.client.insert(
            f"{RAW_SCHEMA}.events_other",
            [[event.transaction_id, "sub_c", "calls", datetime(2026, 10, 7, tzinfo=timezone.utc), "{}", INGESTED]
             for event in FIRST],
            column_names=["transaction_id", "external_subscription_id", "code", "timestamp", "properties",
                          "ingested_at"],
        )
        warehouse.client.command(f"exchange tables {RAW_SCHEMA}.events and {RAW_SCHEMA}.events_other")
    with open_warehouse(settings) as warehouse:
        assert rows_per_day(warehouse) == {("sub_c", "calls", date(2026, 10, 7)): len(FIRST)}


def test_opening_a_covered_store_does_not_rebuild(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST, INGESTED)
    with open_warehouse(settings) as warehouse:
        parts = warehouse.query(
            f"select name from system.parts where database = '{RAW_SCHEMA}' and table = '{TABLE}' and active"
        )
    with open_warehouse(settings) as warehouse:
        again = warehouse.query(
            f"select name from system.parts where database = '{RAW_SCHEMA}' and table = '{TABLE}' and active"
        )
    assert parts and again == parts


def test_a_months_first_and_last_days_stay_out_of_its_month_totals(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        warehouse.append_events([_event("8", "sub_a", "calls", "2026-10-01T00:00:00Z", "{}"),
                                 _event("9", "sub_a", "calls", "2026-10-31T23:59:59.999Z", "{}"),
                                 _event("10", "sub_a", "calls", "2026-10-02T00:00:00Z", "{}")], INGESTED)
        assert month_totals(warehouse) == {("sub_a", "calls", date(2026, 10, 1)): (1, {}, {})}


def test_day_totals_partitioned_by_month_alone_are_made_again(settings: Settings) -> None:
    """A store from before the day totals kept a month's first, middle and last days in
    partitions of their own."""
    with open_warehouse(settings) as warehouse:
        warehouse.append_events(FIRST, INGESTED)
        warehouse.client.command(f"drop table {RAW_SCHEMA}.{TABLE} sync")
        warehouse.client.command(table_ddl(RAW_SCHEMA).replace(partition_key("day"), "toYYYYMM(day)"))
        warehouse.append_events(SECOND, INGESTED)
    with open_warehouse(settings) as warehouse:
        [key] = warehouse.query(f"select partition_key from system.tables where name = '{TABLE}'")
        assert key["partition_key"].replace(" ", "") == partition_key("day").replace(" ", "")
        assert day_totals(warehouse) == EXPECTED
        partitions = warehouse.query(
            f"select distinct partition from system.parts where table = '{TABLE}' and active order by partition"
        )
        assert [row["partition"] for row in partitions] == ["(202609,2)", "(202610,1)"]
