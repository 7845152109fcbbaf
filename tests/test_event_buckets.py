"""The event pass's two paths agree: charges rated by bucket (events aggregated per
subscription, metric and span between two period bounds) get the very units the
per-event join gives (models/metering/int_charge_events_aggregated.sql).

One store per warehouse (chDB and PostgreSQL), built four times: with every eligible
charge rated by bucket (the default), with none (max_bucket_bounds 0: every event
joined to its period), with a mix (3 bounds: most periods fall back to the join) and by
bucket reading every event instead of the day totals kept at insert
(read_event_day_totals false; ClickHouse, where PostgreSQL always reads every event).
Customers in four timezones, calendar and anniversary billing, a weekly plan, a subscription starting and one terminated
mid-period (bounds that are not local midnights), events exactly on and a millisecond
around every bound, outside every period, resent and negative.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.dbt_runner import run_dbt
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.test_close_event_pass import partition_conditions, plan_conditions

AS_OF = "2026-11-02T12:00:00Z"
METRICS = [
    {"code": "calls", "aggregation_type": "count_agg"},
    {"code": "gb", "aggregation_type": "sum_agg", "field_name": "gb"},
    {"code": "peak", "aggregation_type": "max_agg", "field_name": "v"},
    # joined event by event whatever the bounds: latest value, recurring sum, filters
    {"code": "level", "aggregation_type": "latest_agg", "field_name": "v"},
    {"code": "stock", "aggregation_type": "sum_agg", "field_name": "gb", "recurring": True},
    {"code": "requests", "aggregation_type": "count_agg"},
    # a second summed field: the bucket scan picks each metric's field by a CASE
    {"code": "cpu", "aggregation_type": "sum_agg", "field_name": "seconds"},
]
USAGE = [
    {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}},
    {"billable_metric_code": "gb", "charge_model": "graduated",
     "properties": {"graduated_ranges": [{"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "0"},
                                         {"from_value": 10, "to_value": None, "per_unit_amount": "0.5",
                                          "flat_amount": "0"}]}},
    {"billable_metric_code": "peak", "charge_model": "standard", "properties": {"amount": "1"}},
    {"billable_metric_code": "level", "charge_model": "standard", "properties": {"amount": "1"}},
    {"billable_metric_code": "stock", "charge_model": "standard", "properties": {"amount": "1"}},
    {"billable_metric_code": "gb", "charge_model": "percentage", "properties": {"rate": "1"}},
    {"billable_metric_code": "requests", "charge_model": "standard", "properties": {"amount": "0.1"},
     "filters": [{"values": {"region": ["eu"]}, "properties": {"amount": "0.2"}}]},
    {"billable_metric_code": "cpu", "charge_model": "standard", "properties": {"amount": "0.5"}},
]
PLANS = [
    {"code": "monthly", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR", "charges": USAGE},
    {"code": "weekly", "interval": "weekly", "amount_cents": 100, "amount_currency": "EUR", "charges": USAGE},
]
TIMEZONES = ["UTC", "Europe/Paris", "Pacific/Kiritimati", "America/New_York"]
SUBSCRIPTIONS = [
    # (id, timezone, plan, billing_time, subscription_at, terminated_at)
    *[(f"cal_{i}", tz, "monthly", "calendar", "2026-08-01T00:00:00Z", None) for i, tz in enumerate(TIMEZONES)],
    *[(f"ann_{i}", tz, "monthly", "anniversary", "2026-07-15T00:00:00Z", None) for i, tz in enumerate(TIMEZONES)],
    ("week_0", "Europe/Paris", "weekly", "calendar", "2026-08-03T00:00:00Z", None),
    ("started_mid", "UTC", "monthly", "calendar", "2026-10-13T09:17:31Z", None),
    ("ended_mid", "America/New_York", "monthly", "calendar", "2026-08-01T00:00:00Z", "2026-10-20T15:45:12Z"),
]


def _catalog() -> dict:
    return {
        "billable_metrics": METRICS,
        "plans": PLANS,
        "customers": [{"external_id": f"cus_{sub}", "currency": "EUR", "timezone": tz}
                      for sub, tz, *_ in SUBSCRIPTIONS],
        "subscriptions": [
            {"external_id": sub, "external_customer_id": f"cus_{sub}", "plan_code": plan, "billing_time": billing,
             "subscription_at": start, **({"terminated_at": ended} if ended else {})}
            for sub, _, plan, billing, start, ended in SUBSCRIPTIONS
        ],
    }


def _instant(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _events(bounds: list[datetime]) -> list[dict]:
    """Random events from Sep 20 to Nov 4, plus events on and a millisecond around each
    period bound, for every subscription and metric; some resent."""
    rng = random.Random(20261126)
    start = datetime(2026, 9, 20, tzinfo=timezone.utc)
    span_ms = int(timedelta(days=45).total_seconds() * 1000)
    instants = [start + timedelta(milliseconds=rng.randrange(span_ms)) for _ in range(40)]
    instants += [bound + timedelta(milliseconds=delta) for bound in bounds for delta in (-1, 0, 1)]
    events: list[dict] = []
    for sub, *_ in SUBSCRIPTIONS:
        for n, moment in enumerate(instants):
            code = METRICS[n % len(METRICS)]["code"]
            value = rng.choice(["1.5", "-2", "7", "0.001", 3, "12.25"])
            events.append({
                "transaction_id": f"{sub}-{n}", "external_subscription_id": sub, "code": code,
                "timestamp": _instant(moment),
                "properties": {"gb": value, "v": value, "seconds": value, "region": rng.choice(["eu", "us"])},
            })
    resent = [dict(event, properties={"gb": "1000", "v": "1000", "seconds": "1000"}) for event in events[::9]]
    return events + resent


@pytest.fixture(scope="module", params=["chdb", "postgres"])
def builds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("event-buckets")), warehouse_target=request.param)
    try:
        yield _build_four_ways(settings)
    finally:
        if settings.warehouse_target == "postgres":
            stop_ledger(settings)


def _build_four_ways(settings: Settings) -> dict[str, dict]:
    catalog = parse_catalog(_catalog(), source="tests/test_event_buckets.py")
    load_inputs(settings, catalog, [])
    # the periods first, for events on their bounds
    run_dbt(settings, ["run", "--select", "+int_billing_period_charges"], {"as_of": AS_OF})
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query(
            "select distinct period_start as bound from billhouse.int_billing_period_charges"
            " union distinct select period_end from billhouse.int_billing_period_charges"
        )
    bounds = sorted({row["bound"] for row in rows})
    load_inputs(settings, catalog, _events(bounds))
    results = {}
    for label, variables in (
        ("buckets", {"max_bucket_bounds": 32}),
        ("joined", {"max_bucket_bounds": 0}),
        ("mixed", {"max_bucket_bounds": 3}),
        ("buckets_of_events", {"max_bucket_bounds": 32, "read_event_day_totals": "false"}),
    ):
        run_dbt(settings, ["run", "--select", "+int_charge_events_aggregated"], {"as_of": AS_OF, **variables})
        compiled = (settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "metering"
                    / "int_charge_events_aggregated.sql").read_text()
        with open_warehouse(settings) as warehouse:
            aggregates = warehouse.query(
                "select subscription_period_key, charge_id, filter_index, group_key, event_count, count_units,"
                " sum_units, max_units, latest_units, weighted_sum_units, custom_units"
                " from billhouse.int_charge_events_aggregated"
            )
            rated = warehouse.query(
                "select rated_by_bucket, count(*) as n from billhouse.int_billing_period_charges group by 1"
            )
        results[label] = {
            "target": settings.warehouse_target,
            "aggregates": {
                (r["subscription_period_key"], r["charge_id"], r["filter_index"], r["group_key"]):
                    tuple(None if r[c] is None else Decimal(r[c]) for c in
                          ("event_count", "count_units", "sum_units", "max_units", "latest_units",
                           "weighted_sum_units", "custom_units"))
                for r in aggregates
            },
            "rated": {bool(r["rated_by_bucket"]): int(r["n"]) for r in rated},
            "bounds": len(bounds),
            "reads": {cte for cte in ("day_buckets", "event_row_buckets", "resent_days", "resent_months")
                      if f"{cte} as (" in compiled} | ({"month_totals"} if "`event_month_totals` as months" in compiled else set()),
        }
        if label == "mixed" and settings.warehouse_target == "chdb":  # the per-event join's scan
            with open_warehouse(settings) as warehouse:
                [last] = warehouse.query(
                    "select max(period_end) as last_end from billhouse.int_billing_period_charges"
                    " where not rated_by_bucket"
                )
                plan = "\n".join(row["explain"] for row in warehouse.query(
                    "explain indexes = 1 select count() from billhouse.int_charge_events_assigned"
                ))
            results[label]["joined_scan"] = (last["last_end"], partition_conditions(plan))
    if settings.warehouse_target == "chdb":
        results["scans"] = {}
        for label, variables in (("every_timezone", {}), ("one_timezone", {"close_timezone": "Pacific/Kiritimati"})):
            run_dbt(settings, ["run", "--select", "+int_charge_events_aggregated"], {"as_of": AS_OF, **variables})
            results["scans"][label] = _bucket_scan_key_conditions(settings)
    return results


def _bucket_scan_key_conditions(settings: Settings) -> list[str]:
    """The primary-key conditions of the last build's bucket scan (its event_buckets) on
    the closing subscriptions."""
    compiled = (settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "metering"
                / "int_charge_events_aggregated.sql").read_text()
    # the CTEs through event_buckets, then a read of it
    query = compiled[:compiled.index("period_buckets as (")].rstrip().rstrip(",") + "\nselect * from event_buckets"
    with open_warehouse(settings) as warehouse:
        plan = "\n".join(row["explain"] for row in warehouse.query(f"explain indexes = 1 {query}"))
    # the closing subscriptions' set (not the days of resent events, keyed by subscription too)
    return plan_conditions(plan, "(external_subscription_id in ")


def test_every_path_is_exercised(builds: dict[str, dict]) -> None:
    assert builds["buckets"]["rated"][True] > 0 and builds["buckets"]["rated"][False] > 0
    assert builds["joined"]["rated"] == {False: sum(builds["buckets"]["rated"].values())}
    assert 0 < builds["mixed"]["rated"].get(True, 0) < builds["buckets"]["rated"][True]
    assert builds["buckets"]["bounds"] > 3


def test_bucket_units_equal_the_per_event_join(builds: dict[str, dict]) -> None:
    joined = builds["joined"]["aggregates"]
    assert len(joined) > 100
    for label in ("buckets", "mixed", "buckets_of_events"):
        aggregates = builds[label]["aggregates"]
        assert aggregates.keys() == joined.keys(), label
        differing = {key: (aggregates[key], joined[key]) for key in joined
                     if aggregates[key][:4] != joined[key][:4]}
        assert not differing, (label, list(differing.items())[:3])


def test_buckets_read_the_day_totals_and_the_days_they_cannot_give(builds: dict[str, dict]) -> None:
    """On ClickHouse the bucket scan reads the day totals for whole days and the events
    of the days a bound cuts (local midnights off UTC's, a mid-day start and end) and of
    resent events' days; read_event_day_totals false (and PostgreSQL) reads events only."""
    if builds["buckets"]["target"] != "chdb":
        assert builds["buckets"]["reads"] == {"event_row_buckets"}
        return
    assert builds["buckets"]["reads"] == {"day_buckets", "event_row_buckets", "resent_days"}
    assert builds["buckets_of_events"]["reads"] == {"event_row_buckets"}
    # three bounds leave October's middle days in one bucket: they come from the month
    # totals, but for the subscriptions and metrics with a resent event that month
    assert builds["mixed"]["reads"] == {"day_buckets", "event_row_buckets", "resent_days", "resent_months",
                                        "month_totals"}


def test_the_per_event_join_skips_the_months_outside_its_periods(builds: dict[str, dict]) -> None:
    if builds["mixed"]["target"] != "chdb":
        pytest.skip("month partitions are ClickHouse's")
    last_end, conditions = builds["mixed"]["joined_scan"]
    assert conditions
    assert str(last_end.year * 100 + last_end.month) in conditions[0]


def test_the_bucket_scan_names_the_subscriptions_only_when_few_close(builds: dict[str, dict]) -> None:
    """A close of one timezone reads its subscriptions' events through the primary key;
    a close of (nearly) every subscription reads the months whole, without a set lookup
    per event (models/metering/int_charge_events_aggregated.sql)."""
    if builds["buckets"]["target"] != "chdb":
        pytest.skip("the primary key is ClickHouse's")
    assert builds["scans"]["every_timezone"] == []
    assert builds["scans"]["one_timezone"], "a one-timezone close must prune by subscription"
