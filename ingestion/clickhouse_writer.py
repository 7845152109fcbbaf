"""Writer for a ClickHouse *server*: accepted requests become async inserts with wait.

With a server (not embedded chDB) the API can write ``billhouse_raw.events`` directly:
each accepted request is one ``INSERT`` sent with ``async_insert=1,
wait_for_async_insert=1``, so the server batches many requests into one part and
answers only once that part is written — the same "200 means durable" promise as the
landing files, with the grouping done by ClickHouse instead of our fsync thread.

UNTESTED here: the test machine has no ClickHouse server (only embedded chDB, which
has no async insert queue). ``create_app`` does not use it yet; wiring it in means
passing ``ClickHouseWriter.submit`` where the app calls ``LandingWriter.submit`` and
skipping the close's landing load. See docs/ingestion.md.
"""

from __future__ import annotations

import asyncio
from typing import Any

from billhouse.raw_tables import EVENTS, RAW_SCHEMA
from ingestion.segments import Row

ASYNC_INSERT_SETTINGS = {
    "async_insert": 1,
    "wait_for_async_insert": 1,
    "async_insert_busy_timeout_ms": 200,  # the server flushes a group at least this often
    "async_insert_max_data_size": 10 * 1024 * 1024,
}


class ClickHouseWriter:
    def __init__(self, client: Any, schema: str = RAW_SCHEMA) -> None:
        """``client``: a clickhouse-connect client for the server (HTTP interface)."""
        self.client = client
        self.table = f"{schema}.{EVENTS.name}"

    def insert(self, rows: list[Row], ingested_at_us: int) -> None:
        tx, sub, code, ts, props = (list(c) for c in zip(*rows))
        columns = {
            "transaction_id": tx,
            "external_subscription_id": sub,
            "code": code,
            "timestamp": ts,  # DateTime64(3) ticks
            "properties": props,
            "ingested_at": [ingested_at_us] * len(rows),  # DateTime64(6) ticks
        }
        self.client.insert(
            self.table,
            [columns[name] for name in EVENTS.column_names],
            column_names=EVENTS.column_names,
            column_oriented=True,
            settings=ASYNC_INSERT_SETTINGS,
        )

    async def submit(self, ingested_at_us: int, rows: list[Row]) -> None:
        """Resolve once the server has written the rows (async insert with wait)."""
        await asyncio.to_thread(self.insert, rows, ingested_at_us)
