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

Beside them, each month's totals of its middle days (every UTC day but the month's first
and last, the days the events table keeps in the month's middle partition,
raw_tables.EVENTS_PARTITION_KEY): one row per subscription, code and month, kept and
checked the same way (``ensure_event_month_totals``; the count is of the events in the
middle partitions). A close whose bounds leave a month's middle whole, as calendar
billing's month ends do, reads that row instead of some 28 day rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from billhouse.system_tables import event_partitions, table_field

TABLE = "event_day_totals"
VIEW = "event_day_totals_at_insert"
MONTH_TABLE = "event_month_totals"
MONTH_VIEW = "event_month_totals_at_insert"

# the events of a month's middle days (neither its first nor its last UTC day), as the
# events table's partition key places them
_MIDDLE_DAY = "toDayOfMonth(timestamp) != 1 AND toDate(timestamp) != toLastDayOfMonth(timestamp)"

# A property's numbers without the nulls (sumMap and maxMap take no Nullable values).
_NUMBERS = "CAST(mapFilter((key, value) -> value IS NOT NULL, property_numbers), 'Map(String, Decimal(76, 12))')"


def table_ddl(schema: str, table: str = TABLE, period: str = "day") -> str:
    """The totals table: per subscription, code and ``period`` (the UTC day, or the
    first day of the month for the month totals)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.{table} (\n"
        "  `external_subscription_id` String,\n"
        "  `code` String,\n"
        f"  `{period}` Date,\n"
        "  `event_count` SimpleAggregateFunction(sum, UInt64),\n"
        "  `number_sums` SimpleAggregateFunction(sumMap, Map(String, Decimal(76, 12))),\n"
        "  `number_maxes` SimpleAggregateFunction(maxMap, Map(String, Decimal(76, 12)))\n"
        f") ENGINE = AggregatingMergeTree PARTITION BY {partition_key(period)}"
        f" ORDER BY (external_subscription_id, code, {period})"
    )


def partition_key(period: str) -> str:
    """By month; the day totals also apart by the month's first, middle and last days, as
    the events (raw_tables.EVENTS_PARTITION_KEY): a close that reads a month's middle
    from the month totals reads none of its middle days' rows. Spelled as ClickHouse
    prints it in system.tables."""
    if period != "day":
        return f"toYYYYMM({period})"
    return "(toYYYYMM(day), multiIf(toDayOfMonth(day) = 1, 0, day = toLastDayOfMonth(day), 2, 1))"


def totals_select(schema: str, where: str = "") -> str:
    """The totals of the events table's rows (those matching ``where``)."""
    return _totals_select(schema, "toDate(timestamp) AS day", "day", [where] if where else [])


def view_ddl(schema: str) -> str:
    return _view_ddl(schema, VIEW, TABLE, totals_select(schema))


def month_totals_select(schema: str, where: str = "") -> str:
    """The totals of the events table's rows on the middle days of their month (those
    matching ``where``), per month."""
    conditions = [_MIDDLE_DAY, *([where] if where else [])]
    return _totals_select(schema, "toStartOfMonth(timestamp) AS month", "month", conditions)


def month_view_ddl(schema: str) -> str:
    return _view_ddl(schema, MONTH_VIEW, MONTH_TABLE, month_totals_select(schema))


def _totals_select(schema: str, period: str, period_name: str, conditions: list[str]) -> str:
    return (
        f"SELECT external_subscription_id, code, {period}, count() AS event_count,"
        f" sumMap({_NUMBERS}) AS number_sums, maxMap({_NUMBERS}) AS number_maxes"
        f" FROM {schema}.events"
        + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        + f" GROUP BY external_subscription_id, code, {period_name}"
    )


def _view_ddl(schema: str, view: str, table: str, select: str) -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema}.{view} TO {schema}.{table} AS {select}"


def ensure_event_day_totals(client: Any, schema: str) -> bool:
    """Create the totals and their view if missing; rebuild the totals when they do not
    cover the events table's rows. Returns whether they were rebuilt."""
    _drop_if_partitioned_otherwise(client, schema, TABLE, "day")
    return _ensure_totals(client, schema, TABLE, table_ddl(schema), view_ddl(schema), totals_select, None)


def ensure_event_month_totals(client: Any, schema: str) -> bool:
    """The month totals as ensure_event_day_totals keeps the day totals: created with their
    view if missing, rebuilt (from the events of the middle partitions, one at a time)
    when they do not cover the events of the months' middle days. Returns whether they
    were rebuilt."""
    middle_partitions = [p for p in event_partitions(client, schema) if p.endswith("-1")]
    return _ensure_totals(
        client, schema, MONTH_TABLE, table_ddl(schema, MONTH_TABLE, "month"), month_view_ddl(schema),
        month_totals_select, middle_partitions,
    )


def _ensure_totals(
    client: Any, schema: str, table: str, ddl: str, view: str, select: Callable[[str, str], str],
    partitions: list[str] | None,
) -> bool:
    """Create ``table`` and its ``view``; when its comment does not name the events table
    or its count differs from the events of ``partitions`` (None: every partition),
    rebuild it from those partitions, one at a time, with ``select``."""
    client.command(ddl)
    client.command(view)
    events_uuid = table_field(client, schema, "events", "uuid")
    covered = table_field(client, schema, table, "comment") == events_uuid
    if covered and _counts_agree(client, schema, table, partitions):
        return False
    client.command(f"TRUNCATE TABLE {schema}.{table}")
    for partition_id in event_partitions(client, schema) if partitions is None else partitions:
        client.command(f"INSERT INTO {schema}.{table} {select(schema, f'_partition_id = {partition_id!r}')}")
    client.command(f"ALTER TABLE {schema}.{table} MODIFY COMMENT {events_uuid!r}")
    return True


def _drop_if_partitioned_otherwise(client: Any, schema: str, table: str, period: str) -> None:
    """A store whose totals table predates its partition key: drop it (the caller creates
    it again and fills it from the events; the view inserts into it by name)."""
    current = table_field(client, schema, table, "partition_key")
    if current and current.replace(" ", "") != partition_key(period).replace(" ", ""):
        client.command(f"DROP TABLE {schema}.{table} SYNC")


def _counts_agree(client: Any, schema: str, table: str, partitions: list[str] | None) -> bool:
    """Whether ``table`` counts as many events as the events table holds in ``partitions``
    (None: in all)."""
    where = "" if partitions is None else f" WHERE _partition_id IN {tuple(partitions) or ('',)}"
    events = int(client.command(f"SELECT count() FROM {schema}.events{where}"))
    totals = int(client.command(f"SELECT sum(event_count) FROM {schema}.{table}"))
    return events == totals
