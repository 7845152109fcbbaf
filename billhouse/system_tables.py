"""What the embedded store says about its own raw tables (ClickHouse's system tables):
read by the modules that keep tables beside the events (event_day_totals,
billed_fee_periods, identity_sync)."""

from __future__ import annotations

from typing import Any


def table_field(client: Any, schema: str, table: str, field: str) -> str:
    """A column of the table's row in system.tables (uuid, comment, ...), as text."""
    return str(client.command(
        f"SELECT toString({field}) FROM system.tables WHERE database = {{schema:String}} AND name = {{table:String}}",
        parameters={"schema": schema, "table": table},
    ))


def event_partitions(client: Any, schema: str) -> list[str]:
    """The ids of the events table's partitions that hold rows, sorted."""
    result = client.query(
        "SELECT DISTINCT partition_id FROM system.parts"
        " WHERE database = {schema:String} AND table = 'events' AND active ORDER BY partition_id",
        parameters={"schema": schema},
    )
    return [row[0] for row in result.result_rows]


def events_last_block(client: Any, schema: str) -> int:
    """The highest insert block of the events table's parts (0 when it has none): at
    least every stored row's block, and below every row to come."""
    return int(client.command(
        "SELECT max(max_block_number) FROM system.parts"
        " WHERE database = {schema:String} AND table = 'events' AND active",
        parameters={"schema": schema},
    ) or 0)
