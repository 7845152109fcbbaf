"""The embedded ClickHouse store (chDB): the raw tables and what the close reads back.

chDB admits one process per data directory: ``open_warehouse`` is the only way in, and
holds the store's lock while its block runs. dbt, run in the same process
(billhouse/dbt_runner.py), reaches the same directory through the ``chdb`` adapter; a
close keeps its ``Warehouse`` open across its dbt build (billhouse.close.build_drafts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import clickhouse_connect

from billhouse.billed_fee_periods import ensure_billed_fee_periods
from billhouse.catalog import Catalog
from billhouse.event_day_totals import ensure_event_day_totals, ensure_event_month_totals
from billhouse.events import Event
from billhouse.identity_sync import log_table_ddl as identity_log_ddl
from billhouse.raw_tables import ALL_TABLES, EVENTS, RAW_SCHEMA, REFERENCE_TABLES, RawTable
from billhouse.settings import Settings
from billhouse.store_lock import store_lock
from billhouse.system_tables import table_field

log = logging.getLogger(__name__)


class Warehouse:
    def __init__(self, client: Any, schema: str = RAW_SCHEMA, models_schema: str = "billhouse") -> None:
        self.client = client
        self.schema = schema
        self.models_schema = models_schema

    def ensure_raw_tables(self) -> None:
        self.client.command(f"CREATE DATABASE IF NOT EXISTS {self.schema}")
        for table in ALL_TABLES:
            self.client.command(table.clickhouse_ddl(self.schema))
            if table.added_columns:
                for addition in table.clickhouse_column_additions(self._column_names(table), self.schema):
                    self.client.command(addition)
            for addition in table.clickhouse_derived_column_additions(self.schema):
                self.client.command(addition)
            for change in table.clickhouse_derived_column_changes(self.schema):
                self.client.command(change)
            for change in table.clickhouse_setting_changes(self.schema):
                self.client.command(change)
            if table.partition_by and self._partition_key(table) != table.partition_by.replace(" ", ""):
                log.warning(
                    "%s.%s: copying its rows into the current partitions, once (docs/operations.md)",
                    self.schema, table.name,
                )
                self._repartition(table)
        # after the events table's last change: a copy made above gets its totals rebuilt
        ensure_event_day_totals(self.client, self.schema)
        ensure_event_month_totals(self.client, self.schema)
        ensure_billed_fee_periods(self.client, self.schema)
        self.client.command(identity_log_ddl(self.schema))

    def _column_names(self, table: RawTable) -> set[str]:
        rows = self.query(
            "SELECT name FROM system.columns WHERE database = {schema:String} AND table = {name:String}",
            {"schema": self.schema, "name": table.name},
        )
        return {row["name"] for row in rows}

    def _partition_key(self, table: RawTable) -> str:
        return table_field(self.client, self.schema, table.name, "partition_key").replace(" ", "")

    def _repartition(self, table: RawTable) -> None:
        """A store created before the table was partitioned as it is now: copy its rows
        into a table with the current definition and swap the two (once; the copy gets
        new insert block numbers and a new UUID, so the duplicate index rescans it). The
        derived columns are copied as stored instead of computed again from every event's
        properties. The bench's 100 M-event store took 77 s, its day totals' rebuild
        included (docs/operations.md)."""
        copy = f"{table.name}__repartitioned"
        self.client.command(f"DROP TABLE IF EXISTS {self.schema}.{copy}")
        self.client.command(table.clickhouse_ddl(self.schema).replace(
            f"{self.schema}.{table.name} (", f"{self.schema}.{copy} (", 1
        ))
        columns = ", ".join(f"`{name}`" for name in table.column_names + [d.name for d in table.derived_columns])
        self.client.command(
            f"INSERT INTO {self.schema}.{copy} ({columns}) SELECT {columns} FROM {self.schema}.{table.name}",
            settings={"insert_allow_materialized_columns": 1},
        )
        self.client.command(f"EXCHANGE TABLES {self.schema}.{table.name} AND {self.schema}.{copy}")
        self.client.command(f"DROP TABLE {self.schema}.{copy} SYNC")

    def replace_catalog(self, catalog: Catalog) -> None:
        """Replace the catalog, customers and subscriptions with those of ``catalog``."""
        rows = catalog.rows()
        for table in REFERENCE_TABLES:
            # Dropped and created anew: reference tables follow raw_tables.py exactly.
            self.client.command(f"DROP TABLE IF EXISTS {self.schema}.{table.name}")
            self.client.command(table.clickhouse_ddl(self.schema))
            self._insert(table, rows[table.name])

    def append_events(self, events: list[Event], ingested_at: datetime) -> None:
        self._insert(
            EVENTS,
            [
                {
                    "transaction_id": e.transaction_id,
                    "external_subscription_id": e.external_subscription_id,
                    "code": e.code,
                    "timestamp": e.timestamp,
                    "properties": e.properties,
                    "ingested_at": ingested_at,
                }
                for e in events
            ],
        )

    def count_raw_events(self) -> int:
        return int(self.client.command(f"SELECT count() FROM {self.schema}.events"))

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self.client.query(sql, parameters=parameters)
        return [dict(zip(result.column_names, row)) for row in result.result_rows]

    def insert_rows(self, table: RawTable, rows: list[dict[str, Any]]) -> None:
        """Insert rows (dicts by column name) into one of the raw tables."""
        self._insert(table, rows)

    def _insert(self, table: RawTable, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = table.column_names
        self.client.insert(
            f"{self.schema}.{table.name}",
            [[row[name] for name in names] for row in rows],
            column_names=names,
        )


@contextmanager
def open_warehouse(settings: Settings, wait: bool = True) -> Iterator[Warehouse]:
    """Own the warehouse for the duration of the block: the embedded ClickHouse store
    (one process at a time: waits for the store lock, or raises StoreBusyError at once
    when ``wait`` is False — billhouse/store_lock.py), or PostgreSQL when the target is
    ``postgres``."""
    if settings.warehouse_target == "postgres":
        import psycopg

        from billhouse.ledger_connection import sibling_database_url
        from billhouse.postgres_warehouse import WAREHOUSE_DATABASE, PostgresWarehouse

        with psycopg.connect(sibling_database_url(settings, WAREHOUSE_DATABASE), autocommit=True) as conn:
            warehouse = PostgresWarehouse(conn)
            warehouse.ensure_raw_tables()
            yield warehouse  # type: ignore[misc]
        return
    settings.chdb_path.mkdir(parents=True, exist_ok=True)
    with store_lock(settings.data_dir, wait=wait):
        client = clickhouse_connect.get_client(
            interface="chdb",
            path=str(settings.chdb_path),
            # a load may span many months of event time (one partition each): no cap per insert
            settings={"session_timezone": "UTC", "join_use_nulls": 1, "max_partitions_per_insert_block": 0},
        )
        try:
            warehouse = Warehouse(client)
            warehouse.ensure_raw_tables()
            yield warehouse
        finally:
            client.close()
