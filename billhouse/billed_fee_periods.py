"""Each invoiced period's billing facts, kept as the billed fees are mirrored (ClickHouse).

``billed_fees`` grows by every close's fees, and every close's late-event check needs,
per subscription and period, the first issuing date of a charge fee and the furthest
insert block its invoices read, and per subscription its latest invoice with a known
block (int_billed_periods_watermarked). Grouping every fee ever billed for that took
1.87 s of a month-end close after a year of fees (3.6 M) against 0.49 s with one month
(docs/performance.md). A materialized view adds every inserted fee to
``billed_fee_periods`` instead: one row per subscription, period and events table once
merged (AggregatingMergeTree; readers still aggregate, a period may span rows until its
parts merge). Taking a minimum and maximums, it is the same whether a fee is mirrored
once or twice.

``ensure_billed_fee_periods`` creates the table and its view, and fills the table from
``billed_fees`` when its comment does not say that it holds them: a store created before
it, or a fill a crash interrupted. The fill assumes no other writer meanwhile, which the
embedded store's lock guarantees.
"""

from __future__ import annotations

from typing import Any

from billhouse.system_tables import table_field

TABLE = "billed_fee_periods"
VIEW = "billed_fee_periods_at_insert"
FILLED = "holds every billed fee"

# a fee without a known block has no read: this sorts below every real one
_NO_READ = "(toDate(0), toInt64(-1))"


def table_ddl(schema: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.{TABLE} (\n"
        "  `external_subscription_id` String,\n"
        "  `period_start` DateTime64(3, 'UTC'),\n"
        "  `period_end` DateTime64(3, 'UTC'),\n"
        "  `events_table_uuid` String,\n"
        "  `first_charge_issuing_date` SimpleAggregateFunction(min, Nullable(Date)),\n"
        "  `events_through_block` SimpleAggregateFunction(max, Nullable(Int64)),\n"
        "  `latest_read` SimpleAggregateFunction(max, Tuple(Date, Int64))\n"
        ") ENGINE = AggregatingMergeTree"
        " ORDER BY (external_subscription_id, period_start, period_end, events_table_uuid)"
    )


def periods_select(schema: str) -> str:
    """The billed fees' facts per subscription, period and events table ('' when unknown):
    the first issuing date of a charge fee, the furthest block read, and the latest
    (issuing date, block) of a fee with a known block."""
    return (
        "SELECT fees.external_subscription_id AS external_subscription_id, fees.period_start AS period_start,"
        " fees.period_end AS period_end, coalesce(fees.events_table_uuid, '') AS events_table_uuid,"
        " min(if(fees.kind = 'charge', fees.issuing_date, NULL)) AS first_charge_issuing_date,"
        " max(fees.events_through_block) AS events_through_block,"
        f" max(if(fees.events_through_block IS NULL, {_NO_READ},"
        " (fees.issuing_date, assumeNotNull(fees.events_through_block)))) AS latest_read"
        f" FROM {schema}.billed_fees AS fees"
        " GROUP BY external_subscription_id, period_start, period_end, events_table_uuid"
    )


def view_ddl(schema: str) -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema}.{VIEW} TO {schema}.{TABLE} AS {periods_select(schema)}"


def ensure_billed_fee_periods(client: Any, schema: str) -> bool:
    """Create the table and its view if missing; fill the table when it does not hold
    the billed fees yet. Returns whether it was filled."""
    client.command(table_ddl(schema))
    client.command(view_ddl(schema))
    if table_field(client, schema, TABLE, "comment") == FILLED:
        return False
    client.command(f"TRUNCATE TABLE {schema}.{TABLE}")
    client.command(f"INSERT INTO {schema}.{TABLE} {periods_select(schema)}")
    client.command(f"ALTER TABLE {schema}.{TABLE} MODIFY COMMENT {FILLED!r}")
    return True
