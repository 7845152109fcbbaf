"""Each day's totals of the raw events (ClickHouse), kept as events are inserted.

One row per subscription, metric code and UTC day: how many events were stored, and the
sum and the maximum of each numeric property (``property_numbers``, non-numbers left
out). A materialized view adds the totals of every insert into the events table, so the
close's event pass reads these few rows for the days that lie wholly inside one of its
buckets, instead of every event (models/metering/int_charge_events_aggregated.sql). It
counts every stored copy: the close reads the events themselves for the days of resent
events, which it must deduplicate (int_events_deduplicated), and for the days a bound
cuts.

The totals must cover exactly the events table's rows. ``ensure_event_day_totals``
checks it whenever the store is opened (the events table's UUID, recorded in the totals'
comment, and the count of events) and rebuilds them when not: a store created before
this table, an events table re-created or copied (``Warehouse._repartition``), an insert
whose view failed. The rebuild reads the events one month (partition) at a time; it
assumes no other writer inserts meanwhile, which the embedded store's lock guarantees
(a ClickHouse server: pause ingestion while a store is first upgraded, docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from billhouse.system_tables import event_partitions, table_field

TABLE = "event_day_totals"
VIEW = "event_day_totals_at_insert"

# A property's numbers without the nulls (sumMap and maxMap take no Nullable values).
_NUMBERS = "CAST(mapFilter((key, value) -> value IS NOT NULL, property_numbers), 'Map(String, Decimal(76, 12))')"


def table_ddl(schema: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.{TABLE} (\n"
        "  `external_subscription_id` String,\n"
        "  `code` String,\n"
        "  `day` Date,\n"
        "  `event_count` SimpleAggregateFunction(sum, UInt64),\n"
        "  `number_sums` SimpleAggregateFunction(sumMap, Map(String, Decimal(76, 12))),\n"
        "  `number_maxes` SimpleAggregateFunction(maxMap, Map(String, Decimal(76, 12)))\n"
        ") ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(day)"
        " ORDER BY (external_subscription_id, code, day)"
    )


def totals_select(schema: str, where: str = "") -> str:
    """The totals of the events table's rows (those matching ``where``)."""
    return (
        "SELECT external_subscription_id, code, toDate(timestamp) AS day, count() AS event_count,"
        f" sumMap({_NUMBERS}) AS number_sums, maxMap({_NUMBERS}) AS number_maxes"
        f" FROM {schema}.events"
        + (f" WHERE {where}" if where else "")
        + " GROUP BY external_subscription_id, code, day"
    )


def view_ddl(schema: str) -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema}.{VIEW} TO {schema}.{TABLE} AS {totals_select(schema)}"


def ensure_event_day_totals(client: Any, schema: str) -> bool:
    """Create the totals and their view if missing; rebuild the totals when they do not
    cover the events table's rows. Returns whether they were rebuilt."""
    client.command(table_ddl(schema))
    client.command(view_ddl(schema))
    events_uuid = table_field(client, schema, "events", "uuid")
    covered = table_field(client, schema, TABLE, "comment") == events_uuid and _counts_agree(client, schema)
    if covered:
        return False
    client.command(f"TRUNCATE TABLE {schema}.{TABLE}")
    for partition_id in event_partitions(client, schema):
        client.command(f"INSERT INTO {schema}.{TABLE} {totals_select(schema, f'_partition_id = {partition_id!r}')}")
    client.command(f"ALTER TABLE {schema}.{TABLE} MODIFY COMMENT {events_uuid!r}")
    return True


def _counts_agree(client: Any, schema: str) -> bool:
    events = int(client.command(f"SELECT count() FROM {schema}.events"))
    totals = int(client.command(f"SELECT sum(event_count) FROM {schema}.{TABLE}"))
    return events == totals

