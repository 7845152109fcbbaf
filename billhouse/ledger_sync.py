"""Copy the ledger's issued history into the warehouse, where dbt reads it as sources.

Finance reads one place: the warehouse. After each close, ``sync_ledger`` copies the
Postgres ledger's issued invoices, their fees, credit notes, payment collections and
attempts, and wallet transactions into raw tables of the ``billhouse_ledger`` schema
(a ClickHouse database in the embedded store, a schema of the ``billhouse_warehouse``
database on the PostgreSQL target). Every table is a **full refresh**, read from one
REPEATABLE READ snapshot of the ledger so the copies agree with each other; at a
billing ledger's scale (thousands of invoices a month) that is seconds, and it can
never drift. Drafts are not copied: only what was issued (finalized or voided).

``refresh_finance`` is what the close calls: sync, then ``dbt build`` of the models
tagged ``finance`` (the ledger staging models and the marts), then the read-only
snapshot the reporting API and ``billhouse report`` serve (finance_snapshot.py). The
embedded store is held only while copying, never while dbt runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from psycopg import IsolationLevel, sql

from billhouse.dbt_runner import run_dbt
from billhouse.ledger_connection import ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

LEDGER_SCHEMA = "billhouse_ledger"
FINANCE_SELECTOR = "tag:finance"
_SCALE = Decimal("0.000000000001")  # the warehouse's exact decimals: 12 places

DECIMAL = "Decimal(38, 12)"
INSTANT = "DateTime64(6, 'UTC')"


@dataclass(frozen=True)
class LedgerTable:
    """One raw table of the ledger copy: its columns (ClickHouse types) and the query
    that reads it from the ledger, selecting the columns in this order."""

    name: str
    columns: tuple[tuple[str, str], ...]
    query: str
    order_by: str

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def clickhouse_ddl(self, schema: str = LEDGER_SCHEMA) -> str:
        cols = ",\n  ".join(f"`{name}` {ch_type}" for name, ch_type in self.columns)
        return f"CREATE TABLE {schema}.{self.name} (\n  {cols}\n) ENGINE = MergeTree ORDER BY ({self.order_by})"

    def postgres_ddl(self, schema: str = LEDGER_SCHEMA) -> str:
        cols = ",\n  ".join(f'"{name}" {_postgres_type(ch_type)}' for name, ch_type in self.columns)
        return f"CREATE TABLE {schema}.{self.name} (\n  {cols}\n)"


def _postgres_type(clickhouse_type: str) -> str:
    nullable = clickhouse_type.startswith("Nullable(")
    inner = clickhouse_type[len("Nullable("):-1] if nullable else clickhouse_type
    if inner.startswith("Decimal("):
        mapped = "numeric" + inner[len("Decimal"):]
    elif inner.startswith("DateTime64("):
        mapped = "timestamptz"
    else:
        mapped = {"String": "text", "Int32": "integer", "Int64": "bigint", "Date": "date"}[inner]
    return mapped if nullable else f"{mapped} not null"


_ISSUED = "status IN ('finalized', 'voided')"

INVOICES = LedgerTable(
    name="invoices",
    columns=(
        ("id", "String"), ("number", "String"), ("invoice_type", "String"), ("billing_entity", "String"),
        ("external_customer_id", "String"), ("customer_name", "String"), ("currency", "String"),
        ("currency_exponent", "Int32"), ("issuing_date", "Date"), ("due_date", "Date"),
        ("period_start", INSTANT), ("period_end", INSTANT), ("status", "String"), ("payment_status", "String"),
        ("sub_total_cents", "Int64"), ("coupons_cents", "Int64"), ("taxes_cents", "Int64"),
        ("credit_notes_cents", "Int64"), ("prepaid_credits_cents", "Int64"), ("total_cents", "Int64"),
        ("finalized_at", INSTANT), ("voided_at", f"Nullable({INSTANT})"),
    ),
    query=(
        "SELECT id::text, number, invoice_type, billing_entity, external_customer_id, customer_name,"
        " currency::text, currency_exponent, issuing_date, due_date, period_start, period_end, status,"
        " payment_status, sub_total_cents, coupons_cents, taxes_cents, credit_notes_cents,"
        f" prepaid_credits_cents, total_cents, finalized_at, voided_at FROM invoices WHERE {_ISSUED}"
    ),
    order_by="id",
)

INVOICE_FEES = LedgerTable(
    name="invoice_fees",
    columns=(
        ("id", "String"), ("invoice_id", "String"), ("fee_key", "String"), ("kind", "String"),
        ("external_subscription_id", "Nullable(String)"), ("plan_code", "Nullable(String)"),
        ("billable_metric_code", "Nullable(String)"), ("charge_model", "Nullable(String)"),
        ("add_on_code", "Nullable(String)"), ("invoice_display_name", "String"),
        ("period_start", INSTANT), ("period_end", INSTANT), ("units", DECIMAL), ("unit_amount", DECIMAL),
        ("amount_cents", "Int64"), ("precise_coupons_amount_cents", DECIMAL), ("position", "Int32"),
    ),
    query=(
        "SELECT f.id::text, f.invoice_id::text, f.fee_key, f.kind, f.external_subscription_id, f.plan_code,"
        " f.billable_metric_code, f.charge_model, f.add_on_code, f.invoice_display_name, f.period_start,"
        " f.period_end, f.units, f.unit_amount, f.amount_cents, f.precise_coupons_amount_cents, f.position"
        f" FROM invoice_fees f JOIN invoices i ON i.id = f.invoice_id WHERE i.{_ISSUED}"
    ),
    order_by="invoice_id, position",
)

CREDIT_NOTES = LedgerTable(
    name="credit_notes",
    columns=(
        ("id", "String"), ("invoice_id", "String"), ("number", "String"), ("external_customer_id", "String"),
        ("currency", "String"), ("reason", "String"), ("status", "String"), ("total_amount_cents", "Int64"),
        ("taxes_amount_cents", "Int64"), ("refund_amount_cents", "Int64"), ("credit_amount_cents", "Int64"),
        ("balance_amount_cents", "Int64"), ("refund_status", "Nullable(String)"), ("created_at", INSTANT),
    ),
    query=(
        "SELECT id::text, invoice_id::text, number, external_customer_id, currency::text, reason, status,"
        " total_amount_cents, taxes_amount_cents, refund_amount_cents, credit_amount_cents,"
        " balance_amount_cents, refund_status, created_at FROM credit_notes"
    ),
    order_by="invoice_id, number",
)

INVOICE_COLLECTIONS = LedgerTable(
    name="invoice_collections",
    columns=(
        ("invoice_id", "String"), ("amount_due_cents", "Int64"), ("currency", "String"), ("due_date", "Date"),
        ("state", "String"), ("overdue_at", f"Nullable({INSTANT})"),
    ),
    query=(
        "SELECT invoice_id::text, amount_due_cents, currency::text, due_date, state, overdue_at"
        " FROM invoice_collections"
    ),
    order_by="invoice_id",
)

PAYMENT_ATTEMPTS = LedgerTable(
    name="payment_attempts",
    columns=(
        ("id", "String"), ("invoice_id", "String"), ("attempt_number", "Int32"), ("amount_cents", "Int64"),
        ("currency", "String"), ("status", "String"), ("failure_code", "Nullable(String)"),
        ("started_at", INSTANT), ("finished_at", f"Nullable({INSTANT})"),
    ),
    query=(
        "SELECT id::text, invoice_id::text, attempt_number, amount_cents, currency::text, status, failure_code,"
        " started_at, finished_at FROM payment_attempts"
    ),
    order_by="invoice_id, attempt_number",
)

WALLET_TRANSACTIONS = LedgerTable(
    name="wallet_transactions",
    columns=(
        ("id", "String"), ("wallet_id", "String"), ("external_customer_id", "String"), ("currency", "String"),
        ("transaction_type", "String"), ("source", "String"), ("paid_credits", DECIMAL),
        ("granted_credits", DECIMAL), ("credits", DECIMAL), ("amount_cents", "Int64"),
        ("balance_after", DECIMAL), ("invoice_id", "Nullable(String)"), ("position", "Int64"),
        ("created_at", INSTANT),
    ),
    query=(
        "SELECT t.id::text, t.wallet_id::text, w.external_customer_id, w.currency::text, t.transaction_type,"
        " t.source, t.paid_credits, t.granted_credits, t.credits, t.amount_cents, t.balance_after,"
        " t.invoice_id::text, t.position, t.created_at"
        " FROM wallet_transactions t JOIN wallets w ON w.id = t.wallet_id"
    ),
    order_by="wallet_id, position",
)

LEDGER_TABLES: tuple[LedgerTable, ...] = (
    INVOICES, INVOICE_FEES, CREDIT_NOTES, INVOICE_COLLECTIONS, PAYMENT_ATTEMPTS, WALLET_TRANSACTIONS,
)


@dataclass
class SyncReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied


def read_ledger(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every ledger table's rows, from one consistent (REPEATABLE READ) snapshot."""
    with ledger(settings) as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            return {
                table.name: [_exact(table, row) for row in conn.execute(table.query).fetchall()]
                for table in LEDGER_TABLES
            }


def _exact(table: LedgerTable, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Round ledger numerics to the warehouse's 12 decimal places (half-up)."""
    return tuple(
        value.quantize(_SCALE, rounding=ROUND_HALF_UP) if isinstance(value, Decimal) and ch_type == DECIMAL else value
        for value, (_, ch_type) in zip(row, table.columns)
    )


def sync_ledger(settings: Settings) -> SyncReport:
    """Replace the warehouse's ledger copy with the ledger's current issued history."""
    rows = read_ledger(settings)
    report = SyncReport({name: len(table_rows) for name, table_rows in rows.items()})
    with open_warehouse(settings) as warehouse:
        if settings.warehouse_target == "postgres":
            _write_postgres(warehouse.conn, rows)  # type: ignore[attr-defined]
        else:
            _write_clickhouse(warehouse.client, rows)
    return report


def _write_clickhouse(client: Any, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    # The store is ours alone while the block runs (one process per store), so a drop
    # and re-create is not seen half-done by any reader.
    client.command(f"CREATE DATABASE IF NOT EXISTS {LEDGER_SCHEMA}")
    for table in LEDGER_TABLES:
        client.command(f"DROP TABLE IF EXISTS {LEDGER_SCHEMA}.{table.name}")
        client.command(table.clickhouse_ddl())
        if rows[table.name]:
            client.insert(f"{LEDGER_SCHEMA}.{table.name}", rows[table.name], column_names=table.column_names)


def _write_postgres(conn: Any, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    # One transaction: readers of the warehouse see the old copy or the new one.
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA}")
        for table in LEDGER_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {LEDGER_SCHEMA}.{table.name} CASCADE")
            conn.execute(table.postgres_ddl())
            copy = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
                sql.Identifier(LEDGER_SCHEMA), sql.Identifier(table.name),
                sql.SQL(", ").join(map(sql.Identifier, table.column_names)),
            )
            with conn.cursor() as cursor, cursor.copy(copy) as writer:
                for row in rows[table.name]:
                    writer.write_row(row)


def finance_variables(as_of: datetime | date) -> dict[str, str]:
    """dbt vars of a finance build: the close instant and the receivables' as-of date."""
    if isinstance(as_of, datetime):
        return {"as_of": as_of.strftime("%Y-%m-%dT%H:%M:%SZ"), "finance_as_of": as_of.date().isoformat()}
    return {"finance_as_of": as_of.isoformat()}


@dataclass
class FinanceRefresh:
    sync: SyncReport
    dbt_summary: str
    snapshot_path: Any


def refresh_finance(settings: Settings, as_of: datetime, select: str = FINANCE_SELECTOR) -> FinanceRefresh:
    """Sync the ledger copy, build the finance models, export the reporting snapshot.

    Called by the close after finalization, so the marts always agree with the ledger.
    """
    from billhouse.finance_snapshot import export_snapshot

    sync = sync_ledger(settings)
    dbt = run_dbt(
        settings, ["build", "--select", select, "--indirect-selection", "cautious"], finance_variables(as_of)
    )
    path = export_snapshot(settings, as_of)
    return FinanceRefresh(sync, dbt.summary, path)
