"""PostgreSQL as the warehouse: the raw tables in a ``billhouse_warehouse`` database.

The same interface as the embedded ClickHouse ``Warehouse`` (``ensure_raw_tables``,
``replace_catalog``, ``append_events``, ``query``), so loading, dbt and invoicing do not
care which engine holds the data. dbt runs the same project on it through dbt-postgres.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from billhouse.catalog import Catalog
from billhouse.events import Event
from billhouse.raw_tables import ALL_TABLES, EVENTS, RAW_SCHEMA, REFERENCE_TABLES, RawTable

WAREHOUSE_DATABASE = "billhouse_warehouse"


class PostgresWarehouse:
    def __init__(self, conn: psycopg.Connection, schema: str = RAW_SCHEMA) -> None:
        self.conn = conn
        self.schema = schema

    def ensure_raw_tables(self) -> None:
        with self.conn.transaction():
            self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            for table in ALL_TABLES:
                self.conn.execute(table.postgres_ddl(self.schema))
                if table.added_columns:
                    for addition in table.postgres_column_additions(self._column_names(table), self.schema):
                        self.conn.execute(addition)

    def _column_names(self, table: RawTable) -> set[str]:
        rows = self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (self.schema, table.name),
        ).fetchall()
        return {row[0] for row in rows}

    def replace_catalog(self, catalog: Catalog) -> None:
        rows = catalog.rows()
        with self.conn.transaction():
            for table in REFERENCE_TABLES:
                self.conn.execute(f"DROP TABLE IF EXISTS {self.schema}.{table.name} CASCADE")
                self.conn.execute(table.postgres_ddl(self.schema))
                self._insert(table, rows[table.name])

    def append_events(self, events: list[Event], ingested_at: datetime) -> None:
        rows = [
            {
                "transaction_id": e.transaction_id,
                "external_subscription_id": e.external_subscription_id,
                "code": e.code,
                "timestamp": e.timestamp,
                "properties": e.properties,
                "ingested_at": ingested_at,
            }
            for e in events
        ]
        with self.conn.transaction():
            self._insert(EVENTS, rows)

    def count_raw_events(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.schema}.events").fetchone()[0])

    def query(self, statement: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(statement, parameters)
            return list(cursor.fetchall())

    def insert_rows(self, table: RawTable, rows: list[dict[str, Any]]) -> None:
        """Insert rows (dicts by column name) into one of the raw tables."""
        self._insert(table, rows)

    def _insert(self, table: RawTable, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        names = table.column_names
        copy = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
            sql.Identifier(self.schema), sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
        )
        with self.conn.cursor() as cursor, cursor.copy(copy) as writer:
            for row in rows:
                writer.write_row([row[name] for name in names])
