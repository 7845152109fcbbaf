"""The close's single pass over the events (issue 4, "closes stay cheap at scale").

What the close selector runs and what it leaves to CI, and the deduplication by
identity hash that lets the close read the events once.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.dbt_runner import run_dbt
from billhouse.events import load_events
from billhouse.identity_sync import sync_identity_index
from billhouse.raw_tables import EVENTS, EVENTS_PARTITION_KEY
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import CATALOG, FIRST_BATCH, Billed, _event


def _selected(billed: Billed, selector: str) -> list[dict]:
    result = run_dbt(billed.settings, ["ls", "--selector", selector, "--output", "json", "--quiet"])
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def test_close_selector_leaves_unit_tests_and_full_scans_to_ci(billed: Billed) -> None:
    close_nodes = _selected(billed, "close")
    billing_nodes = _selected(billed, "billing")
    close_names = {node["unique_id"] for node in close_nodes}

    models = {n["unique_id"] for n in billing_nodes if n["resource_type"] in ("model", "seed")}
    assert models and models <= close_names, "a close must build every billing model"
    assert not [n for n in close_nodes if n["resource_type"] == "unit_test"]
    assert not [n for n in close_nodes if "full_scan" in n.get("tags", [])]
    # the last check before the ledger: the invoice drafts' data tests run in every close
    draft_tests = {
        n["unique_id"] for n in billing_nodes
        if n["resource_type"] == "test" and n["original_file_path"].startswith("models/billing/")
    }
    assert draft_tests and draft_tests <= close_names
    # and CI's selector still has the full-scan checks and the unit tests
    assert [n for n in billing_nodes if "full_scan" in n.get("tags", [])]
    assert [n for n in billing_nodes if n["resource_type"] == "unit_test"]


def test_an_identity_hash_collision_never_drops_or_repeats_an_event(billed: Billed) -> None:
    """A single-copy event whose hash is listed as duplicated goes through the ranking
    of copies, and wins it: the deduplicated events do not change."""
    before = billed.query(
        "select external_subscription_id, transaction_id, properties"
        " from billhouse.int_events_deduplicated order by 1, 2"
    )
    [single] = billed.query(
        "select external_subscription_id, transaction_id, cityHash64(external_subscription_id, transaction_id) as h"
        " from billhouse_raw.events group by 1, 2 having count() = 1 order by 1, 2 limit 1"
    )
    with open_warehouse(billed.settings) as warehouse:
        warehouse.client.command(
            f"insert into billhouse.int_event_identities_duplicated values ({single['h']}, 2, 0, '')"
        )
        try:
            after = warehouse.query(
                "select external_subscription_id, transaction_id, properties"
                " from billhouse.int_events_deduplicated order by 1, 2"
            )
        finally:
            warehouse.client.command(
                "alter table billhouse.int_event_identities_duplicated delete"
                f" where identity_hash = {single['h']} settings mutations_sync = 1"
            )
    assert after == before


def test_resent_events_are_found_by_identity(billed: Billed) -> None:
    duplicated = billed.query(
        "select identity_hash, max(copies) as most_copies from billhouse.int_event_identities_duplicated"
        " where copies > 1 group by identity_hash"
    )
    raw = billed.query(
        "select cityHash64(external_subscription_id, transaction_id) as h, count() as n"
        " from billhouse_raw.events group by h having n > 1"
    )
    assert sorted((r["identity_hash"], r["most_copies"]) for r in duplicated) == sorted((r["h"], r["n"]) for r in raw)
    assert duplicated, "the session warehouse resends events (tests/conftest.py SECOND_BATCH)"


# --- the duplicate index grows with the store (events loaded since the last close) ---

DEDUPLICATION_MODELS = ["stg_billhouse__events", "int_event_identities_duplicated", "int_events_deduplicated"]


class IndexedStore:
    """A store whose duplicate index dbt builds alone (``synced`` False: a ClickHouse
    server, a build outside a close), or after the identity index's sync, as each close
    on the embedded store runs it (billhouse/identity_sync.py)."""

    def __init__(self, settings: Settings, synced: bool) -> None:
        self.settings = settings
        self.synced = synced
        self.catalog = parse_catalog(CATALOG, source="tests/conftest.py")

    def build(self) -> None:
        if self.synced:
            with open_warehouse(self.settings) as warehouse:
                sync_identity_index(warehouse, self.settings.identity_index_dir)
        run_dbt(self.settings, ["run", "--select", *DEDUPLICATION_MODELS])
        compiled = next(self.settings.dbt_target_dir.rglob("int_event_identities_duplicated.sql")).read_text()
        self.read_events_itself = "group by events.identity_hash" in compiled

    def load(self, events: list[dict]) -> None:
        with open_warehouse(self.settings) as warehouse:
            load_events(warehouse, events, self.catalog)

    def query(self, sql: str) -> list[dict]:
        with open_warehouse(self.settings) as warehouse:
            return warehouse.query(sql)

    def index(self) -> list[dict]:
        return self.query(
            "select identity_hash, copies, scanned_through_block, events_table_uuid"
            " from billhouse.int_event_identities_duplicated order by scanned_through_block, identity_hash"
        )

    def duplicated_in_store(self) -> set[int]:
        rows = self.query(
            "select identity_hash as h from billhouse_raw.events group by h having count() > 1"
        )
        return {row["h"] for row in rows}

    def deduplicated(self) -> list[tuple[str, str, str]]:
        rows = self.query(
            "select external_subscription_id as s, transaction_id as t, properties as p"
            " from billhouse.int_events_deduplicated order by s, t"
        )
        return [(row["s"], row["t"], row["p"]) for row in rows]


@pytest.fixture(scope="module", params=[False, True], ids=["dbt-alone", "identity-index"])
def indexed_store(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[IndexedStore]:
    store = IndexedStore(Settings(data_dir=Path(tmp_path_factory.mktemp("indexed"))), synced=request.param)
    load_inputs(store.settings, store.catalog, FIRST_BATCH)
    store.build()
    yield store


def test_the_duplicate_index_appends_only_what_new_events_duplicate(indexed_store: IndexedStore) -> None:
    store = indexed_store
    first = store.index()
    markers = [row for row in first if row["copies"] == 0]
    assert len(markers) == 1 and markers[0]["events_table_uuid"]
    assert {row["identity_hash"] for row in first if row["copies"] > 1} == store.duplicated_in_store()
    # after a sync the model copies the index's findings and reads no event itself
    assert store.read_events_itself is not store.synced

    store.build()  # nothing loaded since: no identity appended, one more marker
    again = store.index()
    assert [row for row in again if row["copies"] > 1] == [row for row in first if row["copies"] > 1]
    assert len([row for row in again if row["copies"] == 0]) == 2

    # a resend of an October event (another timestamp and value: the first copy wins)
    # and a new November event sent twice in one load
    store.load([
        _event("a-store-2", "sub_a", "storage_gb", "2026-11-03T00:00:00Z", gb="900"),
        _event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),
        _event("a-nov-1", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),
        _event("a-nov-2", "sub_a", "api_calls", "2026-11-02T00:00:00Z"),
    ])
    store.build()
    after = store.index()
    first_scan = markers[0]["scanned_through_block"]
    appended = [row for row in after if row["copies"] > 1 and row["scanned_through_block"] > first_scan]
    new_hashes = {row["h"] for row in store.query(
        "select cityHash64(external_subscription_id, transaction_id) as h from billhouse_raw.events"
        " where transaction_id in ('a-store-2', 'a-nov-1') group by h"
    )}
    assert {row["identity_hash"] for row in appended} == new_hashes and len(appended) == 2
    assert {row["identity_hash"] for row in after if row["copies"] > 1} == store.duplicated_in_store()
    assert max(row["scanned_through_block"] for row in after) > max(row["scanned_through_block"] for row in first)
    assert store.read_events_itself is not store.synced

    deduplicated = store.deduplicated()
    assert len(deduplicated) == len({(s, t) for s, t, _ in deduplicated})
    [store_2] = [p for s, t, p in deduplicated if t == "a-store-2"]
    assert json.loads(store_2) == {"gb": 0.5}  # the first accepted copy, not the resend
    assert [t for s, t, _ in deduplicated if t.startswith("a-nov-")] == ["a-nov-1", "a-nov-2"]


def test_a_recreated_events_table_is_scanned_whole_again(indexed_store: IndexedStore) -> None:
    store = indexed_store
    before = store.deduplicated()
    with open_warehouse(store.settings) as warehouse:
        rows = warehouse.query(f"select {', '.join(EVENTS.column_names)} from billhouse_raw.events")
        warehouse.client.command("drop table billhouse_raw.events")
        warehouse.ensure_raw_tables()  # block numbers start again from 1
        warehouse.insert_rows(EVENTS, rows)
    store.build()
    index = store.index()
    uuids = {row["events_table_uuid"] for row in index if row["copies"] == 0}
    assert len(uuids) == 2, "the re-created table is recorded under its new UUID"
    [table] = store.query(
        "select toString(uuid) as u from system.tables where database = 'billhouse_raw' and name = 'events'"
    )
    latest_uuid = table["u"]
    rescanned = {row["identity_hash"] for row in index if row["events_table_uuid"] == latest_uuid and row["copies"] > 1}
    assert rescanned == store.duplicated_in_store()
    assert store.deduplicated() == before


@pytest.mark.parametrize("earlier_partition_key", [None, "toYYYYMM(timestamp)"], ids=["unpartitioned", "by-month"])
def test_a_store_created_before_the_current_partitions_is_repartitioned_once(
    tmp_path: Path, earlier_partition_key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Stores created unpartitioned, or partitioned by month only (before a month's first
    and last UTC days had partitions of their own), are copied into the current layout
    when first opened, with their derived columns (identity hash, property numbers)."""
    settings = Settings(data_dir=tmp_path)
    settings.chdb_path.mkdir(parents=True)
    earlier = dataclasses.replace(EVENTS, partition_by=earlier_partition_key, clickhouse_settings=())
    client = clickhouse_connect.get_client(interface="chdb", path=str(settings.chdb_path))
    try:
        client.command("CREATE DATABASE billhouse_raw")
        client.command(earlier.clickhouse_ddl())
        client.command(
            "INSERT INTO billhouse_raw.events (transaction_id, external_subscription_id, code, timestamp,"
            " properties, ingested_at) VALUES"
            " ('t1', 's', 'calls', '2026-10-31 23:59:59.999', '{}', '2026-11-02 00:00:00'),"
            " ('t2', 's', 'calls', '2026-11-01 00:00:00', '{\"gb\": 1}', '2026-11-02 00:00:00'),"
            " ('t1', 's', 'calls', '2026-11-05 00:00:00', '{}', '2026-11-06 00:00:00')"
        )
    finally:
        client.close()

    select_rows = (
        "SELECT transaction_id, timestamp, properties, ingested_at, identity_hash, property_numbers"
        " FROM billhouse_raw.events ORDER BY transaction_id, timestamp"
    )
    with caplog.at_level("WARNING", logger="billhouse.warehouse"), open_warehouse(settings) as warehouse:
        [table] = warehouse.query(
            "SELECT partition_key, uuid FROM system.tables WHERE database = 'billhouse_raw' AND name = 'events'"
        )
        rows = warehouse.query(select_rows)
        partitions = warehouse.query(
            "SELECT DISTINCT partition FROM system.parts"
            " WHERE database = 'billhouse_raw' AND table = 'events' AND active ORDER BY partition"
        )
    assert table["partition_key"].replace(" ", "") == EVENTS_PARTITION_KEY.replace(" ", "")
    # Oct 31 (October's last day), Nov 1 (November's first), Nov 5 (between)
    assert [p["partition"] for p in partitions] == ["(202610,2)", "(202611,0)", "(202611,1)"]
    assert [(r["transaction_id"], r["properties"]) for r in rows] == [("t1", "{}"), ("t1", "{}"), ("t2", '{"gb": 1}')]
    assert [r["property_numbers"] for r in rows] == [{}, {}, {"gb": Decimal(1)}]
    assert rows[0]["identity_hash"] == rows[1]["identity_hash"] != rows[2]["identity_hash"]

    with open_warehouse(settings) as warehouse:  # once: a second open copies nothing
        [again] = warehouse.query(
            "SELECT uuid FROM system.tables WHERE database = 'billhouse_raw' AND name = 'events'"
        )
        assert warehouse.query(select_rows) == rows
    assert again["uuid"] == table["uuid"]
    # the operator is told, once: a large store's copy takes a while
    assert [r.getMessage() for r in caplog.records] == [
        "billhouse_raw.events: copying its rows into the current partitions, once (docs/operations.md)"
    ]


def plan_conditions(plan: str, mentioning: str) -> list[str]:
    """The index conditions of an `explain indexes = 1` plan that mention a column."""
    return [
        line.split("Condition:", 1)[1].strip()
        for line in plan.splitlines()
        if "Condition:" in line and mentioning in line
    ]


def partition_conditions(plan: str) -> list[str]:
    """The conditions ClickHouse prunes the raw events' month partitions with."""
    return plan_conditions(plan, "toYYYYMM(timestamp)")


def test_the_event_scan_skips_the_months_outside_the_closing_periods(billed: Billed) -> None:
    """The raw events are partitioned by month and the event pass bounds its scan by the
    closing periods: ClickHouse prunes partitions (a guard against losing the bounds,
    which the amounts alone would not show). Here every charge is rated by bucket; the
    per-event join's bounds are guarded in tests/test_event_buckets.py."""
    [periods] = billed.query(
        "select max(period_end) as last_end from billhouse.int_billing_period_charges"
    )
    compiled = (billed.settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "metering"
                / "int_charge_events_aggregated.sql").read_text()
    plan = "\n".join(row["explain"] for row in billed.query(f"explain indexes = 1 {compiled}"))
    conditions = partition_conditions(plan)
    assert conditions, plan
    last_month = str(periods["last_end"].year * 100 + periods["last_end"].month)
    assert any(last_month in condition for condition in conditions), conditions


def test_a_catalog_without_per_event_charges_reads_no_event_for_them(billed: Billed) -> None:
    """The session catalog has no pay-in-advance usage charge: the per-event chain is
    built empty, its queries not even planned (macro built_only_if; where they are, as
    on PostgreSQL, their event reads compile to `where false`: tests/test_built_only_if.py).
    With such charges they read the events (tests/test_pay_in_advance_charges.py bills them)."""
    assert not billed.query("select charge_id from billhouse.int_pay_in_advance_charges")
    compiled = billed.settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "rating"
    for model in ("int_pay_in_advance_periods", "int_pay_in_advance_events"):
        sql = (compiled / f"{model}.sql").read_text()
        assert "from null(" in sql and "events" not in sql.replace("int_pay_in_advance_events", ""), (model, sql)


def test_each_table_model_is_built_by_one_statement(billed: Billed) -> None:
    """On ClickHouse a table model is `create table … as (select …)`: dbt-clickhouse's
    `create … empty as` followed by an insert of the same select made ClickHouse plan
    every model's query twice (macros/materializations/create_table_as.sql). dbt keeps
    the statement it ran last for each model in target/run: the insert, before."""
    tables = [
        row["name"] for row in billed.query(
            "select name from system.tables where database = 'billhouse' and engine = 'MergeTree'"
            " and name like 'int\\_%'"
        )
    ]
    assert "int_charge_events_aggregated" in tables
    run = billed.settings.dbt_target_dir / "run" / "billhouse" / "models"
    statements = {path.stem: path.read_text() for path in run.rglob("*.sql") if path.stem in tables}
    # incremental models append with an insert after their first build
    built_whole = {name: sql for name, sql in statements.items() if not sql.lstrip().startswith("insert")}
    assert "int_charge_events_aggregated" in built_whole
    for name, sql in built_whole.items():
        assert re.match(r"\s*create table\b", sql), (name, sql[:200])
        assert not re.search(r"\bempty\s+as\b", sql), (name, sql[:400])
