"""The raw tables billhouse writes and dbt reads as sources: defined once, here.

Events are append-only. The catalog, customers and subscriptions are replaced whole
on each load (they are code and reference data, not history). ``models/staging/
_billhouse__sources.yml`` documents the same columns for dbt.
"""

from __future__ import annotations

from dataclasses import dataclass

from billhouse.property_numbers import NUMERIC_TEXT_PATTERN, PROPERTY_DECIMAL_PLACES

RAW_SCHEMA = "billhouse_raw"


@dataclass(frozen=True)
class Column:
    name: str
    clickhouse_type: str

    @property
    def postgres_type(self) -> str:
        return _postgres_type(self.clickhouse_type)


def _postgres_type(clickhouse_type: str) -> str:
    inner = clickhouse_type
    nullable = inner.startswith("Nullable(")
    if nullable:
        inner = inner[len("Nullable("):-1]
    if inner.startswith("Decimal("):
        mapped = "numeric" + inner[len("Decimal"):]
    elif inner.startswith("DateTime64("):
        mapped = "timestamptz"
    else:
        mapped = {"String": "text", "Int32": "integer", "Int64": "bigint", "Bool": "boolean", "Date": "date"}[inner]
    return mapped if nullable else f"{mapped} not null"


def clickhouse_decimal_of_raw_json(raw_value: str) -> str:
    """ClickHouse SQL for the decimal a raw JSON value spells (JSONExtractRaw's text: a
    string's quotes and spaces around the number trimmed), null if none: the rule of
    billhouse/property_numbers.py and of the `property_decimal` macro. The pattern check
    comes first: toDecimal128OrNull alone reads '1.2.3' as 1.23 and '.' or 'e5' as 0.
    Decimal128 with 12 places holds numbers below 10^26: a larger number is null, as on
    PostgreSQL."""
    trimmed = f"trimBoth({raw_value}, '\" ')"
    return (
        f"if(match({trimmed}, '{NUMERIC_TEXT_PATTERN}'),"
        f" CAST(toDecimal128OrNull({trimmed}, {PROPERTY_DECIMAL_PLACES})"
        f" AS Nullable(Decimal(76, {PROPERTY_DECIMAL_PLACES}))), NULL)"
    )


@dataclass(frozen=True)
class DerivedColumn:
    """A ClickHouse column computed from the others at insert (MATERIALIZED): stored,
    never inserted, left out of ``SELECT *``. PostgreSQL computes it in the staging model."""

    name: str
    clickhouse_type: str
    clickhouse_expression: str

    def clickhouse_definition(self) -> str:
        return f"`{self.name}` {self.clickhouse_type} MATERIALIZED {self.clickhouse_expression}"


@dataclass(frozen=True)
class RawTable:
    name: str
    columns: tuple[Column, ...]
    order_by: str
    append_only: bool = False
    engine: str = "MergeTree"
    derived_columns: tuple[DerivedColumn, ...] = ()
    clickhouse_settings: tuple[tuple[str, str], ...] = ()
    partition_by: str | None = None
    # columns added after stores were first created with this table (nullable ones):
    # added to an older store's table when it is opened
    added_columns: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def postgres_ddl(self, schema: str = RAW_SCHEMA) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.postgres_type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {schema}.{self.name} (\n  {cols}\n)"

    def clickhouse_ddl(self, schema: str = RAW_SCHEMA) -> str:
        definitions = [f"`{c.name}` {c.clickhouse_type}" for c in self.columns]
        definitions += [d.clickhouse_definition() for d in self.derived_columns]
        cols = ",\n  ".join(definitions)
        return (
            f"CREATE TABLE IF NOT EXISTS {schema}.{self.name} (\n  {cols}\n)"
            f" ENGINE = {self.engine}"
            + (f" PARTITION BY {self.partition_by}" if self.partition_by else "")
            + f" ORDER BY ({self.order_by})"
            + (" SETTINGS " + ", ".join(f"{name} = {value}" for name, value in self.clickhouse_settings)
               if self.clickhouse_settings else "")
        )

    def clickhouse_derived_column_changes(self, schema: str = RAW_SCHEMA) -> list[str]:
        """For a store created before a derived column's expression changed: the current
        expression for the rows inserted from now on (metadata only: stored parts keep
        their values, docs/operations.md)."""
        return [
            f"ALTER TABLE {schema}.{self.name} MODIFY COLUMN `{d.name}` {d.clickhouse_type}"
            f" MATERIALIZED {d.clickhouse_expression}"
            for d in self.derived_columns
        ]

    def clickhouse_derived_column_additions(self, schema: str = RAW_SCHEMA) -> list[str]:
        """For a store created before a derived column existed: add it (old parts compute
        it when read, new parts store it)."""
        return [
            f"ALTER TABLE {schema}.{self.name} ADD COLUMN IF NOT EXISTS {d.clickhouse_definition()}"
            for d in self.derived_columns
        ]

    def clickhouse_column_additions(self, present: set[str], schema: str = RAW_SCHEMA) -> list[str]:
        """For a store created before some added columns existed (``present``: the
        table's columns now): add the missing ones."""
        return [
            f"ALTER TABLE {schema}.{self.name} ADD COLUMN IF NOT EXISTS `{c.name}` {c.clickhouse_type}"
            for c in self.columns
            if c.name in self.added_columns and c.name not in present
        ]

    def postgres_column_additions(self, present: set[str], schema: str = RAW_SCHEMA) -> list[str]:
        return [
            f'ALTER TABLE {schema}.{self.name} ADD COLUMN IF NOT EXISTS "{c.name}" {c.postgres_type}'
            for c in self.columns
            if c.name in self.added_columns and c.name not in present
        ]

    def clickhouse_setting_changes(self, schema: str = RAW_SCHEMA) -> list[str]:
        """For a store created before a table setting existed: set it (idempotent)."""
        return [
            f"ALTER TABLE {schema}.{self.name} MODIFY SETTING {name} = {value}"
            for name, value in self.clickhouse_settings
        ]


def _cols(*pairs: tuple[str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, ch_type) for name, ch_type in pairs)


DECIMAL = "Decimal(38, 12)"
OPTIONAL_DECIMAL = f"Nullable({DECIMAL})"

# (month, 0 for the month's first UTC day, 2 for its last, 1 between), spelled as
# ClickHouse prints it in system.tables (the store's open compares the two)
EVENTS_PARTITION_KEY = (
    "(toYYYYMM(timestamp), multiIf(toDayOfMonth(timestamp) = 1, 0,"
    " toDate(timestamp) = toLastDayOfMonth(timestamp), 2, 1))"
)

EVENTS = RawTable(
    name="events",
    columns=_cols(
        ("transaction_id", "String"),
        ("external_subscription_id", "String"),
        ("code", "String"),
        ("timestamp", "DateTime64(3, 'UTC')"),
        ("properties", "String"),  # a JSON object, as text
        ("ingested_at", "DateTime64(6, 'UTC')"),
    ),
    order_by="external_subscription_id, code, timestamp, transaction_id",
    append_only=True,
    # The event's identity as a 64-bit hash, stored at insert: the close finds resent
    # events by grouping this one column instead of hashing two strings per event
    # (macros/event_identity_hash.sql, models/metering/int_event_identities_duplicated.sql).
    derived_columns=(
        DerivedColumn("identity_hash", "UInt64", "cityHash64(external_subscription_id, transaction_id)"),
        # Every top-level property as the decimal it spells (null when it is not a number),
        # parsed once at insert: a close reads a metric's field from here instead of
        # parsing each event's JSON (macro event_number; the same rule as property_decimal).
        DerivedColumn(
            "property_numbers",
            "Map(String, Nullable(Decimal(76, 12)))",
            f"CAST(arrayMap(kv -> (kv.1, {clickhouse_decimal_of_raw_json('kv.2')}),"
            " JSONExtractKeysAndValuesRaw(properties)), 'Map(String, Nullable(Decimal(76, 12)))')",
        ),
    ),
    # Each row keeps the number of the insert block that stored it (the `_block_number`
    # column; block numbers only grow), so the close can tell the events loaded since
    # its last run (models/metering/int_event_identities_duplicated.sql).
    clickhouse_settings=(("enable_block_number_column", "1"),),
    # One partition per month of event time, split in three: the month's first UTC day,
    # its last UTC day, and the days between. A read bounded in time (a close's periods)
    # skips the other months' data whatever the store's history, and the days calendar
    # billing's bounds cut (every timezone's local midnight of a 1st falls on the last
    # UTC day of the month before or on the 1st in UTC), which a close reads event by
    # event instead of from the day totals, are read from their own small partitions
    # instead of from the whole month (models/metering/int_charge_events_aggregated.sql).
    partition_by=EVENTS_PARTITION_KEY,
)

BILLABLE_METRICS = RawTable(
    name="billable_metrics",
    columns=_cols(
        ("code", "String"),
        ("name", "String"),
        ("aggregation_type", "String"),
        ("field_name", "Nullable(String)"),
        ("recurring", "Bool"),
        ("expression", "Nullable(String)"),
        ("rounding_function", "Nullable(String)"),
        ("rounding_precision", "Nullable(Int32)"),
        ("expression_clickhouse", "Nullable(String)"),  # the validated custom_agg SQL
        ("expression_postgres", "Nullable(String)"),
    ),
    order_by="code",
)

PLANS = RawTable(
    name="plans",
    columns=_cols(
        ("code", "String"),
        ("name", "String"),
        ("interval", "String"),
        ("amount_cents", "Int64"),
        ("amount_currency", "String"),
        ("pay_in_advance", "Bool"),
        ("trial_period", "Int32"),
        ("bill_charges_monthly", "Bool"),
        ("minimum_commitment_cents", "Nullable(Int64)"),
    ),
    order_by="code",
)

# One row per charge. Its prices are CHARGE_PRICES rows: the default properties
# (filter_index -1) and one per filter, each with the charge model's scalar properties
# as typed columns (Lago's names); tiers are CHARGE_RANGES rows, never JSON parsed
# inside SQL.
CHARGES = RawTable(
    name="charges",
    columns=_cols(
        ("charge_id", "String"),
        ("plan_code", "String"),
        ("charge_index", "Int32"),
        ("billable_metric_code", "String"),
        ("charge_model", "String"),
        ("invoice_display_name", "String"),
        ("pay_in_advance", "Bool"),
        ("prorated", "Bool"),
        ("min_amount_cents", "Int64"),
        ("grouped_by", "String"),  # JSON array of property keys
        ("filter_count", "Int32"),
        ("properties", "String"),  # the charge's properties as authored, JSON text
    ),
    order_by="charge_id",
)

CHARGE_PRICES = RawTable(
    name="charge_prices",
    columns=_cols(
        ("charge_id", "String"),
        ("filter_index", "Int32"),
        ("invoice_display_name", "String"),
        ("amount", OPTIONAL_DECIMAL),
        ("package_size", OPTIONAL_DECIMAL),
        ("free_units", OPTIONAL_DECIMAL),
        ("rate", OPTIONAL_DECIMAL),
        ("fixed_amount", OPTIONAL_DECIMAL),
        ("free_units_per_events", "Nullable(Int64)"),
        ("free_units_per_total_aggregation", OPTIONAL_DECIMAL),
        ("per_transaction_min_amount", OPTIONAL_DECIMAL),
        ("per_transaction_max_amount", OPTIONAL_DECIMAL),
    ),
    order_by="charge_id, filter_index",
)

CHARGE_FILTER_VALUES = RawTable(
    name="charge_filter_values",
    columns=_cols(
        ("charge_id", "String"),
        ("filter_index", "Int32"),
        ("property_key", "String"),
        ("value", "String"),
    ),
    order_by="charge_id, filter_index, property_key, value",
)

CHARGE_RANGES = RawTable(
    name="charge_ranges",
    columns=_cols(
        ("charge_id", "String"),
        ("filter_index", "Int32"),
        ("range_index", "Int32"),
        ("from_value", DECIMAL),
        ("to_value", OPTIONAL_DECIMAL),
        ("lower_bound", DECIMAL),
        ("per_unit_amount", OPTIONAL_DECIMAL),
        ("rate", OPTIONAL_DECIMAL),
        ("flat_amount", DECIMAL),
    ),
    order_by="charge_id, filter_index, range_index",
)

CUSTOMERS = RawTable(
    name="customers",
    columns=_cols(
        ("external_id", "String"),
        ("name", "String"),
        ("currency", "String"),
        ("timezone", "String"),
    ),
    order_by="external_id",
)

SUBSCRIPTIONS = RawTable(
    name="subscriptions",
    columns=_cols(
        ("external_id", "String"),
        ("external_customer_id", "String"),
        ("plan_code", "String"),
        ("billing_time", "String"),
        ("subscription_at", "DateTime64(3, 'UTC')"),
        ("ending_at", "Nullable(DateTime64(3, 'UTC'))"),
        ("terminated_at", "Nullable(DateTime64(3, 'UTC'))"),
        ("previous_subscription_id", "Nullable(String)"),  # billing clock: plan changes
    ),
    order_by="external_id",
)

# --- billing clock (issue 4) ---------------------------------------------------------
# The fees on finalized invoices, mirrored from the ledger after each close (written by
# billhouse.close, one row per fee_key, re-written idempotently). The warehouse reads it
# to bill late events as adjustments exactly once. Never replaced with the catalog.
BILLED_FEES = RawTable(
    name="billed_fees",
    columns=_cols(
        ("fee_key", "String"),
        ("adjusted_fee_key", "String"),  # the fee an adjustment corrects; else fee_key
        ("invoice_key", "String"),
        ("issuing_date", "Date"),
        ("kind", "String"),
        ("external_subscription_id", "String"),
        ("period_start", "DateTime64(3, 'UTC')"),
        ("period_end", "DateTime64(3, 'UTC')"),
        ("units", DECIMAL),
        ("precise_amount", DECIMAL),
        ("amount_cents", "Int64"),
        # The events the invoice was built from (ClickHouse): every event of the store's
        # events table (this UUID) up to this insert block number. Null on PostgreSQL, and
        # for the invoices of a customer whose latest invoice of the close an earlier run
        # had already finalized (billhouse.close.events_read_by_invoice).
        ("events_through_block", "Nullable(Int64)"),
        ("events_table_uuid", "Nullable(String)"),
    ),
    order_by="fee_key",
    append_only=True,
    engine="ReplacingMergeTree",
    added_columns=("events_through_block", "events_table_uuid"),
)

ALL_TABLES: tuple[RawTable, ...] = (
    EVENTS,
    BILLABLE_METRICS,
    PLANS,
    CHARGES,
    CHARGE_PRICES,
    CHARGE_FILTER_VALUES,
    CHARGE_RANGES,
    CUSTOMERS,
    SUBSCRIPTIONS,
    BILLED_FEES,
)
REFERENCE_TABLES: tuple[RawTable, ...] = tuple(t for t in ALL_TABLES if not t.append_only)
