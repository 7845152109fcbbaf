"""The days calendar billing's bounds cut are read from their own partitions (ClickHouse).

A close reads the day totals for the days that lie wholly inside a period, and the
events themselves for the UTC days a local midnight cuts. For calendar billing those are
a month's last and first UTC days: the raw events keep each month's first day, last day
and the days between in three partitions (raw_tables.EVENTS_PARTITION_KEY), so reading
the cut days skips the rest of the month. Before, their events were filtered out of the
whole month: with many subscriptions every granule of the month was read.

The store: 1 000 customers in Pacific/Kiritimati (UTC+14, whose Oct 1 and Nov 1 begin at
10:00 UTC on Sep 30 and Oct 31), each with 40 calls on Oct 15 and one call on each side
of both bounds. The close's event pass reads the cut days' 4 000 events, the day totals
and the closing periods (about 11 000 rows) under a limit of half the 40 000 calls of
Oct 15; before, it read the whole month.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from billhouse.catalog import parse_catalog
from billhouse.close import build_drafts, close_variables, load_inputs
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

SUBSCRIPTIONS = 1_000
CALLS_INSIDE = 40  # per subscription, on Oct 15
READ_LIMIT = SUBSCRIPTIONS * CALLS_INSIDE // 2
KIRITIMATI = "Pacific/Kiritimati"
CATALOG = {
    "billable_metrics": [{"code": "calls", "name": "Calls", "aggregation_type": "count_agg"}],
    "plans": [{
        "code": "metered", "name": "Metered", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
        "charges": [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.5"}}],
    }],
    "customers": [
        {"external_id": f"cus_{n}", "name": f"Customer {n}", "currency": "EUR", "timezone": KIRITIMATI}
        for n in range(SUBSCRIPTIONS)
    ],
    "subscriptions": [
        {"external_id": f"sub_{n}", "external_customer_id": f"cus_{n}", "plan_code": "metered",
         "subscription_at": "2026-09-30T10:00:00Z"}  # Oct 1, 00:00 in Kiritimati
        for n in range(SUBSCRIPTIONS)
    ],
}
# (UTC instant, billed in Kiritimati's October?): a call on each side of both bounds
CUT_DAY_CALLS = [
    ("2026-09-30T09:59:59.999Z", False),  # Sep 30, 23:59 in Kiritimati
    ("2026-09-30T10:00:00.000Z", True),   # Oct 1, 00:00
    ("2026-10-31T09:59:59.999Z", True),   # Oct 31, 23:59
    ("2026-10-31T10:00:00.000Z", False),  # Nov 1, 00:00
]


def _events() -> list[dict]:
    events = []
    for n in range(SUBSCRIPTIONS):
        for i in range(CALLS_INSIDE):
            events.append({"transaction_id": f"in-{n}-{i}", "external_subscription_id": f"sub_{n}",
                           "code": "calls", "timestamp": f"2026-10-15T12:{i // 60:02d}:{i % 60:02d}Z"})
        for i, (instant, _) in enumerate(CUT_DAY_CALLS):
            events.append({"transaction_id": f"cut-{n}-{i}", "external_subscription_id": f"sub_{n}",
                           "code": "calls", "timestamp": instant})
    return events


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("month-edges")))
    load_inputs(settings, parse_catalog(CATALOG, source="tests/test_month_edge_partitions.py"), _events())
    build_drafts(settings, close_variables(datetime(2026, 10, 31, 10, 5, tzinfo=timezone.utc),
                                           datetime(2026, 10, 31, 0, 0, tzinfo=timezone.utc)))
    yield settings


def test_the_events_are_stored_by_month_edge(settings: Settings) -> None:
    with open_warehouse(settings) as warehouse:
        parts = warehouse.query(
            "select partition, sum(rows) as events from system.parts"
            " where database = 'billhouse_raw' and table = 'events' and active group by partition order by partition"
        )
    assert [(p["partition"], p["events"]) for p in parts] == [
        ("(202609,2)", 2 * SUBSCRIPTIONS),  # September's last day
        ("(202610,1)", CALLS_INSIDE * SUBSCRIPTIONS),  # October between its first and last days
        ("(202610,2)", 2 * SUBSCRIPTIONS),  # October's last day
    ]


def test_october_bills_the_calls_inside_its_local_bounds(settings: Settings) -> None:
    billed_per_subscription = CALLS_INSIDE + sum(billed for _, billed in CUT_DAY_CALLS)
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query(
            "select units, count() as subscriptions from billhouse.int_usage_aggregated group by units"
        )
    assert [(r["units"], r["subscriptions"]) for r in rows] == [(Decimal(billed_per_subscription), SUBSCRIPTIONS)]


def test_the_cut_days_are_read_without_the_rest_of_the_month(settings: Settings) -> None:
    scan = next((settings.dbt_target_dir / "compiled").rglob("int_charge_events_aggregated.sql")).read_text()
    assert "event_day_totals" in scan, "the inner days come from the day totals"
    with open_warehouse(settings) as warehouse:
        result = warehouse.client.query(
            f"select sum(event_count) from ({scan})",
            settings={"max_rows_to_read": READ_LIMIT, "read_overflow_mode": "throw"},
        )
        [[counted]] = result.result_rows
        assert counted == SUBSCRIPTIONS * (CALLS_INSIDE + 2)
        # the limit is tight enough to fail: reading the days between refuses
        with pytest.raises(DatabaseError, match="TOO_MANY_ROWS"):
            warehouse.client.query(
                "select max(timestamp) from billhouse_raw.events where toDayOfMonth(timestamp) = 15",
                settings={"max_rows_to_read": READ_LIMIT, "read_overflow_mode": "throw"},
            )
