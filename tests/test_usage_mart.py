"""The usage mart maintained month by month (issue 4, "closes stay cheap at scale").

On ClickHouse fct_usage is incremental (insert_overwrite by UTC month of usage_date):
a build recomputes the days of the events loaded since its watermark, copies the other
days of their months, and replaces those months' partitions; a first build, a re-created
events table, or a change of the metrics or of the subscriptions' customers recompute
every month. Each case is checked against a full rebuild (`--full-refresh`) of the same
store, which must give the same rows, reading every event and reading the day totals
kept at insert. The tests share one small store and run in order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.dbt_runner import run_dbt
from billhouse.events import load_events
from billhouse.raw_tables import EVENTS
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import CATALOG, FIRST_BATCH, _event

MART_COLUMNS = ("external_customer_id", "billable_metric_code", "usage_date", "aggregation_type", "events_count", "units")
Key = tuple[str, str, str]


class UsageStore:
    def __init__(self, settings: Settings, catalog: dict) -> None:
        self.settings = settings
        self.catalog_spec = catalog
        self.catalog = parse_catalog(catalog, source="tests/test_usage_mart.py")

    def build(self) -> dict[str, Any]:
        """Build fct_usage and its parents (no ledger needed); returns the build's plan."""
        run_dbt(self.settings, ["run", "--select", "+fct_usage"])
        return self.plan()

    def plan(self) -> dict[str, Any]:
        compiled = (self.settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "finance" / "fct_usage.sql").read_text()
        return json.loads(compiled.split("/* usage_months_plan ")[1].split(" */")[0])

    def rebuilt_from_scratch(self) -> dict[Key, tuple]:
        """The mart rebuilt whole, reading every event; then rebuilt whole from the day
        totals (ClickHouse), which must give the same rows."""
        run_dbt(self.settings, ["run", "--select", "fct_usage", "--full-refresh"], {"read_event_day_totals": "false"})
        from_events = self.mart()
        run_dbt(self.settings, ["run", "--select", "fct_usage", "--full-refresh"])
        assert self.mart() == from_events
        return from_events

    def load(self, events: list[dict], ingested_at: datetime | None = None) -> None:
        with open_warehouse(self.settings) as warehouse:
            load_events(warehouse, events, self.catalog, ingested_at)

    def replace_catalog(self, spec: dict) -> None:
        self.catalog_spec = spec
        self.catalog = parse_catalog(spec, source="tests/test_usage_mart.py")
        load_inputs(self.settings, self.catalog, [])

    def query(self, sql: str) -> list[dict]:
        with open_warehouse(self.settings) as warehouse:
            return warehouse.query(sql)

    def rows(self) -> list[dict]:
        return self.query("select * from billhouse.fct_usage")

    def mart(self) -> dict[Key, tuple]:
        """The mart's values by grain, without the bookkeeping columns."""
        return {
            (r["external_customer_id"], r["billable_metric_code"], str(r["usage_date"])):
                (r["aggregation_type"], r["events_count"], r["units"])
            for r in self.rows()
        }

    def blocks_by_day(self) -> dict[str, set[int]]:
        days: dict[str, set[int]] = {}
        for r in self.rows():
            days.setdefault(str(r["usage_date"]), set()).add(r["computed_through_block"])
        return days

    def blocks_by_month(self) -> dict[str, set[int]]:
        months: dict[str, set[int]] = {}
        for r in self.rows():
            months.setdefault(str(r["usage_date"])[:7], set()).add(r["computed_through_block"])
        return months


@pytest.fixture(scope="module")
def usage_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageStore]:
    store = UsageStore(Settings(data_dir=Path(tmp_path_factory.mktemp("usage"))), copy.deepcopy(CATALOG))
    load_inputs(store.settings, store.catalog, FIRST_BATCH)
    assert store.build()["mode"] == "full"
    yield store


def test_a_build_recomputes_only_the_days_of_the_events_loaded_since_the_last_one(usage_store: UsageStore) -> None:
    store = usage_store
    before = store.mart()
    first_blocks = store.blocks_by_month()
    assert set(first_blocks) == {"2026-10", "2026-11"} and len(set().union(*first_blocks.values())) == 1

    assert store.build()["mode"] == "none"  # nothing loaded: nothing recomputed
    assert store.blocks_by_month() == first_blocks and store.mart() == before

    store.load([
        _event("a-nov-1", "sub_a", "api_calls", "2026-11-01T10:00:00Z"),  # a day that has usage
        _event("a-nov-2", "sub_a", "api_calls", "2026-11-15T10:00:00Z"),
        _event("b-nov-1", "sub_b", "storage_gb", "2026-11-15T23:59:59.999Z", gb="1.25"),
    ])
    plan = store.build()
    assert plan["mode"] == "months" and plan["months"] == [["2026-11-01", "2026-12-01"]]
    assert plan["days"] == ["2026-11-01", "2026-11-15"]
    blocks = store.blocks_by_month()
    assert blocks["2026-10"] == first_blocks["2026-10"], "October was not recomputed"
    assert blocks["2026-11"] == {int(plan["through_block"])} and int(plan["through_block"]) > max(first_blocks["2026-11"])

    incremental = store.mart()
    assert {k: v for k, v in incremental.items() if k[2] < "2026-11"} == {k: v for k, v in before.items() if k[2] < "2026-11"}
    assert incremental[("cus_a", "api_calls", "2026-11-01")] == ("count_agg", 2, Decimal(2))
    assert incremental[("cus_a", "api_calls", "2026-11-15")] == ("count_agg", 1, Decimal(1))
    assert incremental[("cus_b", "storage_gb", "2026-11-15")] == ("sum_agg", 1, Decimal("1.25"))
    assert store.rebuilt_from_scratch() == incremental


def test_a_resend_in_another_month_does_not_count_and_a_copy_that_outranks_moves_the_usage(
    usage_store: UsageStore,
) -> None:
    store = usage_store
    before = store.mart()
    blocks_before = store.blocks_by_day()
    # a-call-1 (October 2) resent with a January timestamp: the first accepted copy wins
    store.load([_event("a-call-1", "sub_a", "api_calls", "2027-01-10T00:00:00Z")])
    plan = store.build()
    # its own day, and the day of its first copy (a copy may outrank the other)
    assert plan["mode"] == "months" and [m[0] for m in plan["months"]] == ["2026-10-01", "2027-01-01"]
    assert plan["days"] == ["2026-10-02", "2027-01-10"]
    # October's other days are copied as they were, and stamped with this build
    blocks = store.blocks_by_day()
    assert {d: b for d, b in blocks.items() if d.startswith("2026-10")} == {
        d: {int(plan["through_block"])} for d in blocks_before if d.startswith("2026-10")
    }
    assert store.mart() == before
    assert "2027-01" not in store.blocks_by_month()
    assert store.rebuilt_from_scratch() == before

    # a month whose only event is then outranked by a copy accepted earlier (an explicit,
    # older ingestion time) in another month: the month is left without rows
    store.load([_event("a-mar-1", "sub_a", "storage_gb", "2027-03-05T00:00:00Z", gb="3")])
    store.build()
    assert store.mart()[("cus_a", "storage_gb", "2027-03-05")] == ("sum_agg", 1, Decimal(3))
    store.load([_event("a-mar-1", "sub_a", "storage_gb", "2027-04-07T00:00:00Z", gb="4")],
               ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    plan = store.build()
    assert [m[0] for m in plan["months"]] == ["2027-03-01", "2027-04-01"]
    assert plan["days"] == ["2027-03-05", "2027-04-07"]
    moved = store.mart()
    assert ("cus_a", "storage_gb", "2027-03-05") not in moved and "2027-03" not in store.blocks_by_month()
    assert moved[("cus_a", "storage_gb", "2027-04-07")] == ("sum_agg", 1, Decimal(4))
    assert store.rebuilt_from_scratch() == moved


def test_events_past_the_duplicate_index_are_recomputed_once_it_has_scanned_them(usage_store: UsageStore) -> None:
    """A refresh of the mart alone (the duplicate index not rebuilt since a resend was
    loaded) counts the resend, as a full rebuild would; its month stays above the
    watermark, so the next build, after the index has scanned it, recomputes it."""
    store = usage_store
    before = store.mart()
    watermark = max(r["computed_through_block"] for r in store.rows())
    store.load([_event("a-call-2", "sub_a", "api_calls", "2026-10-03T08:00:00Z")])  # a resend, same day
    run_dbt(store.settings, ["run", "--select", "fct_usage"])
    assert store.plan()["mode"] == "months" and int(store.plan()["through_block"]) == watermark
    assert store.mart()[("cus_a", "api_calls", "2026-10-03")] == ("count_agg", 2, Decimal(2))  # not yet indexed
    plan = store.build()  # the duplicate index first, then the mart
    assert plan["mode"] == "months" and int(plan["through_block"]) > watermark
    assert store.mart() == before


def test_a_mart_built_before_it_was_maintained_by_month_is_rebuilt(usage_store: UsageStore) -> None:
    store = usage_store
    before = store.mart()
    with open_warehouse(store.settings) as warehouse:
        warehouse.client.command(
            "create or replace table billhouse.fct_usage engine = MergeTree order by tuple() as select "
            + ", ".join(MART_COLUMNS) + " from billhouse.fct_usage"
        )
    assert store.build()["mode"] == "full"
    [table] = store.query("select partition_key as k from system.tables where database = 'billhouse' and name = 'fct_usage'")
    assert "toYYYYMM(usage_date)" in table["k"]
    assert store.mart() == before


def test_a_new_subscription_recomputes_no_past_month(usage_store: UsageStore) -> None:
    """A subscription added since the last build changes no row already built (its events
    come after it): the next build recomputes nothing, and its events are new ones."""
    store = usage_store
    before = store.mart()
    spec = copy.deepcopy(store.catalog_spec)
    spec["subscriptions"].append({"external_id": "sub_new", "external_customer_id": "cus_a", "plan_code": "starter",
                                  "subscription_at": "2026-11-20T00:00:00Z"})
    store.replace_catalog(spec)
    assert store.build()["mode"] == "none"
    assert store.mart() == before
    store.load([_event("new-1", "sub_new", "api_calls", "2026-11-21T00:00:00Z")])
    plan = store.build()
    assert (plan["mode"], plan["days"]) == ("months", ["2026-11-21"])
    grown = store.mart()
    assert grown == {**before, ("cus_a", "api_calls", "2026-11-21"): ("count_agg", 1, Decimal(1))}
    assert store.rebuilt_from_scratch() == grown


def test_a_changed_metric_field_or_subscription_customer_recomputes_every_month(usage_store: UsageStore) -> None:
    store = usage_store
    fingerprints = {r["inputs_fingerprint"] for r in store.rows()}
    assert len(fingerprints) == 1

    spec = copy.deepcopy(store.catalog_spec)
    [storage] = [m for m in spec["billable_metrics"] if m["code"] == "storage_gb"]
    storage["field_name"] = "size"  # no event has it: every storage day sums to 0
    store.replace_catalog(spec)
    plan = store.build()  # no event loaded, yet every month is recomputed
    assert plan["mode"] == "full"
    changed = store.mart()
    assert changed[("cus_b", "storage_gb", "2026-10-06")] == ("sum_agg", 10, Decimal(0))
    assert {r["inputs_fingerprint"] for r in store.rows()} == {int(plan["inputs_fingerprint"])} != fingerprints
    assert store.rebuilt_from_scratch() == changed

    spec = copy.deepcopy(spec)
    [sub_b] = [s for s in spec["subscriptions"] if s["external_id"] == "sub_b"]
    sub_b["external_customer_id"] = "cus_a"
    store.replace_catalog(spec)
    assert store.build()["mode"] == "full"
    moved = store.mart()
    assert not [k for k in moved if k[0] == "cus_b"]
    assert moved[("cus_a", "tokens", "2026-10-05")] == ("sum_agg", 1, Decimal(1))
    assert store.rebuilt_from_scratch() == moved


def test_a_recreated_events_table_recomputes_every_month(usage_store: UsageStore) -> None:
    store = usage_store
    before = store.mart()
    old_uuids = {r["events_table_uuid"] for r in store.rows()}
    old_watermark = max(r["computed_through_block"] for r in store.rows())
    with open_warehouse(store.settings) as warehouse:
        rows = warehouse.query(f"select {', '.join(EVENTS.column_names)} from billhouse_raw.events")
        warehouse.client.command("drop table billhouse_raw.events")
        warehouse.ensure_raw_tables()  # block numbers start again from 1
        warehouse.insert_rows(EVENTS, rows)
    # block numbers below the mart's watermark: only the new table's UUID tells
    store.load([_event("a-may-1", "sub_a", "api_calls", "2027-05-02T00:00:00Z")])
    plan = store.build()
    assert plan["mode"] == "full" and int(plan["through_block"]) < old_watermark
    assert {r["events_table_uuid"] for r in store.rows()} == {plan["events_table_uuid"]} and not old_uuids & {
        plan["events_table_uuid"]
    }
    recreated = store.mart()
    assert recreated == {**before, ("cus_a", "api_calls", "2027-05-02"): ("count_agg", 1, Decimal(1))}
    assert store.rebuilt_from_scratch() == recreated


def test_a_store_without_resent_events_reads_them_as_stored(tmp_path: Path) -> None:
    """No identity stored twice: the mart reads the events as stored (no ranking of
    copies, no resent days) and gives what reading every event gives, on a first build
    and on a refresh by month; every stored event is counted once."""
    store = UsageStore(Settings(data_dir=tmp_path), copy.deepcopy(CATALOG))
    identities: set[tuple[str, str]] = set()
    sent_once = []
    for event in FIRST_BATCH:  # without its same-batch resend
        identity = (event["external_subscription_id"], event["transaction_id"])
        if identity not in identities:
            identities.add(identity)
            sent_once.append(event)
    load_inputs(store.settings, store.catalog, sent_once)

    def compiled() -> str:
        return (store.settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "finance" / "fct_usage.sql").read_text()

    assert store.build()["mode"] == "full"
    assert "resent_days" not in compiled()
    assert sum(events for _, events, _ in store.mart().values()) == len(sent_once)
    assert store.mart() == store.rebuilt_from_scratch()

    store.load([_event("a-call-late-day", "sub_a", "api_calls", "2026-10-05T09:00:00Z")])
    assert store.build()["mode"] == "months"
    assert "resent_days" not in compiled() and "ranked_copies" not in compiled()
    assert sum(events for _, events, _ in store.mart().values()) == len(sent_once) + 1
    assert store.mart() == store.rebuilt_from_scratch()
