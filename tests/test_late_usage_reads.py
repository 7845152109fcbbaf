"""Which invoiced periods a close re-rates for late events (int_late_usage_periods).

On ClickHouse each finalized invoice records the insert block its draft read up to
(billed_fees.events_through_block); a period is late when its events go past the block
of its own invoice and of any later invoice of its customer. The store below closes
October, then day after day, and checks that:

- events ingested after October ended but loaded before its close (the minutes between
  local midnight and the close) are on October's invoice and never make October late;
- a late event and a resent copy of a billed event make October late until the
  customer's next invoice: the late event is billed there once, the copy bills nothing,
  and neither is looked at again;
- an events table re-created since (new UUID, block numbers anew) falls back to the
  ingestion-time rule.

PostgreSQL has no insert block numbers: there the ingestion-time rule bills the same,
and keeps re-rating the periods (last test).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from billhouse.billed_fee_periods import periods_select
from billhouse.catalog import Catalog, parse_catalog
from billhouse.close import CloseReport, close, load_inputs
from billhouse.events import load_events
from billhouse.ledger_connection import stop_ledger
from billhouse.raw_tables import EVENTS
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

CATALOG = {
    "billable_metrics": [{"code": "calls", "name": "Calls", "aggregation_type": "count_agg"}],
    "plans": [
        {
            "code": "metered",
            "name": "Metered",
            "interval": "monthly",
            "amount_cents": 1000,
            "amount_currency": "EUR",
            "charges": [{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.5"}}],
        }
    ],
    "customers": [
        {"external_id": "cus_late", "name": "Late Ltd", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_resend", "name": "Resend SA", "currency": "EUR", "timezone": "UTC"},
    ],
    "subscriptions": [
        {"external_id": "sub_late", "external_customer_id": "cus_late", "plan_code": "metered",
         "subscription_at": "2026-10-01T00:00:00Z"},
        {"external_id": "sub_resend", "external_customer_id": "cus_resend", "plan_code": "metered",
         "subscription_at": "2026-10-01T00:00:00Z"},
    ],
}


def _call(tx: str, sub: str, ts: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": "calls", "timestamp": ts}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


@dataclass
class LateStore:
    settings: Settings
    catalog: Catalog
    closes: dict[str, CloseReport]
    late_periods: dict[str, list[tuple[str, datetime]]]

    def load(self, events: list[dict], ingested_at: str) -> None:
        with open_warehouse(self.settings) as warehouse:
            load_events(warehouse, events, self.catalog, ingested_at=_at(ingested_at))

    def close(self, label: str, as_of: str) -> None:
        self.closes[label] = close(self.settings, _at(as_of), refresh_finance_marts=False)
        with open_warehouse(self.settings) as warehouse:
            rows = warehouse.query(
                "select external_subscription_id, period_start from billhouse.int_late_usage_periods"
                " order by external_subscription_id, period_start"
            )
        self.late_periods[label] = [
            (row["external_subscription_id"], row["period_start"].astimezone(timezone.utc)) for row in rows
        ]

    def billed(self, sql_filter: str = "1 = 1") -> list[dict]:
        with open_warehouse(self.settings) as warehouse:
            final = "" if self.settings.warehouse_target == "postgres" else " final"
            return warehouse.query(f"select * from billhouse_raw.billed_fees{final} where {sql_filter} order by fee_key")


OCTOBER = datetime(2026, 10, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LateStore]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("late-reads")))
    catalog = parse_catalog(CATALOG, source="tests/test_late_usage_reads.py")
    load_inputs(settings, catalog, [])
    s = LateStore(settings, catalog, {}, {})
    try:
        # October's last calls reach billhouse two minutes after midnight, before the close
        s.load([_call("l-1", "sub_late", "2026-10-10T00:00:00Z"),
                _call("l-2", "sub_late", "2026-10-31T23:59:00Z"),
                _call("r-1", "sub_resend", "2026-10-31T23:58:00Z")], ingested_at="2026-11-01T00:02:00Z")
        s.close("nov-1", "2026-11-01T00:05:00Z")
        s.close("nov-2", "2026-11-02T00:05:00Z")
        # a late October call for one customer; a resent copy of a billed call for the other
        s.load([_call("l-3", "sub_late", "2026-10-20T00:00:00Z"),
                _call("r-1", "sub_resend", "2026-10-31T23:58:00Z")], ingested_at="2026-11-03T10:00:00Z")
        s.close("nov-4", "2026-11-04T00:05:00Z")
        s.close("dec-1", "2026-12-01T00:05:00Z")
        s.close("dec-2", "2026-12-02T00:05:00Z")
        # the events table re-created (as a store upgrade that repartitions it does)
        with open_warehouse(settings) as warehouse:
            warehouse._repartition(EVENTS)
        s.close("dec-2-after-recreate", "2026-12-02T00:05:00Z")
        yield s
    finally:
        stop_ledger(settings)


def _invoice(report: CloseReport, customer: str):
    [invoice] = [i for i in report.created if i.external_customer_id == customer]
    return invoice


def test_events_that_arrive_before_the_close_are_billed_and_never_late(store: LateStore) -> None:
    october = _invoice(store.closes["nov-1"], "cus_late")
    assert october.total_cents == 1000 + 2 * 50
    assert _invoice(store.closes["nov-1"], "cus_resend").total_cents == 1000 + 50
    # every October event was ingested after October ended, and was on its invoice
    assert store.late_periods["nov-2"] == []


def test_the_billed_fees_record_the_block_their_invoice_read_up_to(store: LateStore) -> None:
    october = store.billed("issuing_date = '2026-11-01'")
    assert october and all(row["events_through_block"] is not None for row in october)
    assert len({row["events_table_uuid"] for row in october}) == 1
    december = store.billed("issuing_date = '2026-12-01'")
    assert min(r["events_through_block"] for r in december) > max(r["events_through_block"] for r in october)


def test_the_billed_periods_kept_at_insert_agree_with_the_billed_fees(store: LateStore) -> None:
    """billhouse_raw.billed_fee_periods, added to by a view at each mirror of fees, holds
    what grouping every billed fee gives (each close's late check reads it instead)."""
    with open_warehouse(store.settings) as warehouse:
        kept = warehouse.query(
            "select external_subscription_id as s, period_start as p, period_end as e, events_table_uuid as u,"
            " min(first_charge_issuing_date) as d, max(events_through_block) as b, max(latest_read) as r"
            " from billhouse_raw.billed_fee_periods group by s, p, e, u order by s, p, e, u"
        )
        grouped = warehouse.query(
            f"select external_subscription_id as s, period_start as p, period_end as e, events_table_uuid as u,"
            f" first_charge_issuing_date as d, events_through_block as b, latest_read as r"
            f" from ({periods_select('billhouse_raw')}) order by s, p, e, u"
        )
    assert kept == grouped
    assert len({row["u"] for row in kept}) == 1, "one events table's blocks (the re-created one has no fee yet)"
    assert any(row["r"][1] >= 0 for row in kept), "fees with a known block"


def test_a_late_event_or_a_resent_copy_makes_the_period_late_until_the_customers_next_invoice(
    store: LateStore,
) -> None:
    assert store.late_periods["nov-4"] == [("sub_late", OCTOBER), ("sub_resend", OCTOBER)]
    assert store.closes["nov-4"].created == []  # nothing ends: the adjustment waits
    assert store.late_periods["dec-1"] == [("sub_late", OCTOBER), ("sub_resend", OCTOBER)]


def test_the_late_event_is_billed_once_and_the_resent_copy_bills_nothing(store: LateStore) -> None:
    late = _invoice(store.closes["dec-1"], "cus_late")
    adjustments = [f for f in late.fees if f.kind == "adjustment"]
    assert [(f.units, f.amount_cents, f.period_start) for f in adjustments] == [(1, 50, OCTOBER)]
    assert late.total_cents == 1000 + 0 + 50  # November: fee, no calls; October's late call
    resend = _invoice(store.closes["dec-1"], "cus_resend")
    assert [f for f in resend.fees if f.kind == "adjustment"] == []


def test_a_period_accounted_for_by_the_customers_next_invoice_is_not_re_rated(store: LateStore) -> None:
    # October's own invoice read less than the late call; the December invoices read it
    assert store.late_periods["dec-2"] == []
    assert store.closes["dec-2"].created == []


def test_a_re_created_events_table_falls_back_to_the_ingestion_time_rule(store: LateStore) -> None:
    # the recorded blocks belong to the old table: every October event was ingested after
    # October ended, November's never were (none)
    assert store.late_periods["dec-2-after-recreate"] == [("sub_late", OCTOBER), ("sub_resend", OCTOBER)]
    # re-rated, not re-billed
    assert store.closes["dec-2-after-recreate"].created == []


@pytest.mark.parametrize("target", ["chdb", "postgres"])
def test_a_store_made_before_gets_the_new_billed_fee_columns(tmp_path: Path, target: str) -> None:
    """A warehouse whose billed_fees predates the two columns gets them, empty, when
    opened; its earlier rows keep the ingestion-time rule (null block)."""
    settings = Settings(data_dir=tmp_path, warehouse_target=target)
    try:
        with open_warehouse(settings) as warehouse:
            if target == "chdb":  # nor the billed periods kept at insert (billhouse/billed_fee_periods.py)
                _command(warehouse, "DROP VIEW billhouse_raw.billed_fee_periods_at_insert")
                _command(warehouse, "DROP TABLE billhouse_raw.billed_fee_periods")
            for column in ("events_through_block", "events_table_uuid"):
                _command(warehouse, f"ALTER TABLE billhouse_raw.billed_fees DROP COLUMN {column}")
            _command(
                warehouse,
                "INSERT INTO billhouse_raw.billed_fees (fee_key, adjusted_fee_key, invoice_key, issuing_date, kind,"
                " external_subscription_id, period_start, period_end, units, precise_amount, amount_cents)"
                " VALUES ('f', 'f', 'i', '2026-11-01', 'charge', 's', '2026-10-01', '2026-11-01', 1, 0.5, 50)",
            )
        with open_warehouse(settings) as warehouse:
            rows = warehouse.query("SELECT fee_key, events_through_block, events_table_uuid FROM billhouse_raw.billed_fees")
        assert rows == [{"fee_key": "f", "events_through_block": None, "events_table_uuid": None}]
        if target == "chdb":  # filled from the fees when first opened
            with open_warehouse(settings) as warehouse:
                periods = warehouse.query(
                    "SELECT external_subscription_id, first_charge_issuing_date, events_through_block, latest_read.2 AS read"
                    " FROM billhouse_raw.billed_fee_periods"
                )
            assert periods == [{"external_subscription_id": "s", "first_charge_issuing_date": date(2026, 11, 1),
                                "events_through_block": None, "read": -1}]
    finally:
        stop_ledger(settings)


def _command(warehouse, statement: str) -> None:
    if hasattr(warehouse, "client"):
        warehouse.client.command(statement)
    else:
        warehouse.conn.execute(statement)


@pytest.fixture(scope="module")
def postgres_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LateStore]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("late-reads-pg")), warehouse_target="postgres")
    catalog = parse_catalog(CATALOG, source="tests/test_late_usage_reads.py")
    s = LateStore(settings, catalog, {}, {})
    try:
        load_inputs(settings, catalog, [])
        s.load([_call("l-1", "sub_late", "2026-10-10T00:00:00Z"),
                _call("l-2", "sub_late", "2026-10-31T23:59:00Z"),
                _call("r-1", "sub_resend", "2026-10-31T23:58:00Z")], ingested_at="2026-11-01T00:02:00Z")
        s.close("nov-1", "2026-11-01T00:05:00Z")
        s.load([_call("l-3", "sub_late", "2026-10-20T00:00:00Z"),
                _call("r-1", "sub_resend", "2026-10-31T23:58:00Z")], ingested_at="2026-11-03T10:00:00Z")
        s.close("dec-1", "2026-12-01T00:05:00Z")
        s.close("dec-2", "2026-12-02T00:05:00Z")
        yield s
    finally:
        stop_ledger(settings)


def test_postgres_bills_late_usage_once_by_ingestion_time_and_keeps_re_rating(postgres_store: LateStore) -> None:
    s = postgres_store
    assert _invoice(s.closes["nov-1"], "cus_late").total_cents == 1000 + 2 * 50
    late = _invoice(s.closes["dec-1"], "cus_late")
    assert [(f.units, f.amount_cents, f.period_start) for f in late.fees if f.kind == "adjustment"] == [
        (1, 50, OCTOBER)
    ]
    assert [f for f in _invoice(s.closes["dec-1"], "cus_resend").fees if f.kind == "adjustment"] == []
    assert all(row["events_through_block"] is None for row in s.billed())
    # every October event was ingested after October ended: both periods are re-rated
    # at every close, and bill nothing more
    assert s.late_periods["dec-2"] == [("sub_late", OCTOBER), ("sub_resend", OCTOBER)]
    assert s.closes["dec-2"].created == []


def test_a_re_run_records_no_block_for_a_customer_whose_latest_invoice_already_existed() -> None:
    """The customer's latest invoice of a close carries its late adjustments: when a re-run
    finds it already finalized (built from fewer events), none of that customer's
    invoices gets a block; invoices found already finalized never do."""
    from datetime import date
    from types import SimpleNamespace

    from billhouse.close import events_read_by_invoice
    from invoicing.drafts import EventsRead

    def invoice(key: str, customer: str, issued: str, created: bool) -> SimpleNamespace:
        return SimpleNamespace(invoice_key=key, external_customer_id=customer, currency="EUR",
                               issuing_date=date.fromisoformat(issued), created=created)

    invoices = [
        invoice("a/nov", "a", "2026-11-01", created=False),  # an earlier close's, found again
        invoice("a/dec", "a", "2026-12-01", created=True),
        invoice("b/nov", "b", "2026-11-15", created=True),
        invoice("b/dec", "b", "2026-12-01", created=False),  # the re-run found it finalized
    ]
    read = EventsRead(7, "uuid")
    drafts = [SimpleNamespace(invoice_key=i.invoice_key, events_read=read) for i in invoices]
    assert events_read_by_invoice(drafts, invoices) == {"a/dec": read}
