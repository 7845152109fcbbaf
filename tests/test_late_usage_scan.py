"""Which events a close reads to find late usage (int_late_usage_periods, ClickHouse).

One block bound for every invoiced period was set by the period invoiced longest ago:
with one customer who churned in August, every later close read every event stored
since its August invoice. Now a close checks only the periods whose subscription has
events stored after the block its invoices read (int_subscription_event_blocks); the
recently billed ones share one block bound, the others are read by subscription and by
their periods' time range. The store below bills a customer who churned on Aug 20, then an
active customer's October (5 000 calls in one insert block), and checks that the late
check reads neither those calls nor the churned customer's events until a late event of
the churned customer arrives, which it then finds and bills on an invoice of its own (the
customer has no next invoice to wait for). Last, once the active customer's November calls
are stored (after October's invoice), October's period is checked at each close, and the
check reads neither November's events (before, a close late in a month read every event
of that month) nor October's, whose part was stored before October's invoice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.test_late_usage_reads import CATALOG as LATE_READS_CATALOG
from tests.test_late_usage_reads import LateStore, _call

CATALOG = {
    **LATE_READS_CATALOG,  # a count charge at 0.50 EUR on a monthly 10 EUR plan
    "customers": [
        {"external_id": "cus_gone", "name": "Gone GmbH", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_active", "name": "Active SA", "currency": "EUR", "timezone": "UTC"},
    ],
    "subscriptions": [
        {"external_id": "sub_gone", "external_customer_id": "cus_gone", "plan_code": "metered",
         "subscription_at": "2026-08-01T00:00:00Z", "terminated_at": "2026-08-20T15:00:00Z"},
        {"external_id": "sub_active", "external_customer_id": "cus_active", "plan_code": "metered",
         "subscription_at": "2026-10-01T00:00:00Z"},
    ],
}
ACTIVE_CALLS = 5_000
READ_LIMIT = ACTIVE_CALLS // 2
AUGUST = datetime(2026, 8, 1, tzinfo=timezone.utc)


@dataclass
class ScanStore(LateStore):
    # each close's late check run again right after it, allowed to read at most
    # read_limit rows (READ_LIMIT unless given): the subscriptions it found, or ClickHouse's refusal
    limited_check: dict[str, list[str] | str] = field(default_factory=dict)
    # the same for the close's scan of the subscription block log (the events stored since
    # its previous scan): the subscriptions it appended, or the refusal
    limited_log: dict[str, list[str] | str] = field(default_factory=dict)

    def close(self, label: str, as_of: str, read_limit: int = READ_LIMIT) -> None:
        super().close(label, as_of)
        compiled = self.settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "metering"
        for model, results in (("int_late_usage_periods", self.limited_check),
                               ("int_subscription_event_blocks", self.limited_log)):
            scan = (compiled / f"{model}.sql").read_text()
            with open_warehouse(self.settings) as warehouse:
                try:
                    result = warehouse.client.query(
                        f"select external_subscription_id from ({scan}) order by 1",
                        settings={"max_rows_to_read": read_limit, "read_overflow_mode": "throw"},
                    )
                    results[label] = [row[0] for row in result.result_rows]
                except DatabaseError as refused:
                    results[label] = str(refused)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScanStore]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("late-scan")))
    catalog = parse_catalog(CATALOG, source="tests/test_late_usage_scan.py")
    load_inputs(settings, catalog, [])
    s = ScanStore(settings, catalog, {}, {}, {})
    try:
        s.load([_call(f"g-{i}", "sub_gone", f"2026-08-{i + 10}T12:00:00Z") for i in range(3)],
               ingested_at="2026-08-20T00:00:00Z")
        s.close("aug-22", "2026-08-22T00:05:00Z")  # the churned customer's last invoice
        s.load([_call(f"a-{i}", "sub_active", "2026-10-15T12:00:00Z") for i in range(ACTIVE_CALLS)],
               ingested_at="2026-10-16T00:00:00Z")
        s.close("nov-1", "2026-11-01T00:05:00Z")
        s.close("nov-2", "2026-11-02T00:05:00Z")
        # a late August call of the churned customer, months after its invoice
        s.load([_call("g-late", "sub_gone", "2026-08-15T12:00:00Z")], ingested_at="2026-11-02T10:00:00Z")
        s.close("nov-3", "2026-11-03T00:05:00Z")
        # November's calls of the active customer, stored after October's invoice: October's
        # period is checked again, but they lie outside its time range
        s.load([_call(f"n-{i}", "sub_active", "2026-11-03T12:00:00Z") for i in range(3 * ACTIVE_CALLS)],
               ingested_at="2026-11-03T13:00:00Z")
        s.close("nov-4", "2026-11-04T00:05:00Z")
        s.close("dec-3", "2026-12-03T00:05:00Z")
        yield s
    finally:
        stop_ledger(settings)


def test_the_invoices_are_built(store: ScanStore) -> None:
    [august] = store.closes["aug-22"].created  # terminated Aug 20: its last period, prorated
    assert august.external_customer_id == "cus_gone"
    assert [f.amount_cents for f in august.fees if f.kind == "charge"] == [3 * 50]
    [october] = store.closes["nov-1"].created
    assert (october.external_customer_id, october.total_cents) == ("cus_active", 1000 + ACTIVE_CALLS * 50)


def test_a_customer_invoiced_long_ago_does_not_make_the_late_check_read_every_event(store: ScanStore) -> None:
    assert store.late_periods["nov-2"] == []
    # neither October's 5 000 calls nor the churned customer's are read
    assert store.limited_check["nov-2"] == []


def test_the_late_event_of_a_customer_invoiced_long_ago_is_still_found(store: ScanStore) -> None:
    assert store.late_periods["nov-3"] == [("sub_gone", AUGUST)]
    assert store.limited_check["nov-3"] == ["sub_gone"]


def test_the_read_limit_is_tight_enough_to_fail(store: ScanStore) -> None:
    """Reading October's calls alone is refused under the same limit."""
    with open_warehouse(store.settings) as warehouse:
        with pytest.raises(DatabaseError, match="TOO_MANY_ROWS"):
            warehouse.client.query(
                "select max(timestamp) from billhouse_raw.events where external_subscription_id = 'sub_active'",
                settings={"max_rows_to_read": READ_LIMIT, "read_overflow_mode": "throw"},
            )


def test_the_late_check_reads_no_event_outside_the_invoiced_periods(store: ScanStore) -> None:
    """October's period has events stored after its invoice (November's calls): it is
    checked, and the check reads neither November's 15 000 calls (outside its time range;
    the month partitions) nor October's 5 000 (their part was stored before October's
    invoice: skipped by its last block)."""
    assert store.late_periods["nov-4"] == []
    assert store.limited_check["nov-4"] == []


def test_the_block_log_reads_only_the_parts_stored_since_its_last_scan(store: ScanStore) -> None:
    """Each close appends to int_subscription_event_blocks the subscriptions with events
    stored since its previous scan: it reads those parts only, not the block number of
    every stored event (October's 5 000 calls exceed the limit)."""
    assert store.limited_log["nov-2"] == [""]  # nothing new: the marker row alone
    assert store.limited_log["nov-3"] == ["", "sub_gone"]


def test_a_customer_with_no_subscription_left_gets_its_late_usage_on_an_invoice_of_its_own(
    store: ScanStore,
) -> None:
    """It has no next invoice to wait for: the close that finds the late call bills it,
    dated the close's day, and no later close bills it again or re-rates the period."""
    [invoice] = [i for i in store.closes["nov-3"].created if i.external_customer_id == "cus_gone"]
    assert invoice.issuing_date.isoformat() == "2026-11-03"
    assert [(f.kind, f.units, f.amount_cents, f.period_start, f.invoice_display_name) for f in invoice.fees] == [
        ("adjustment", 1, 50, AUGUST, "Calls (late usage, earlier period)")
    ]
    assert invoice.total_cents == 50
    assert store.late_periods["dec-3"] == []
    assert [i.external_customer_id for i in store.closes["dec-3"].created] == ["cus_active"]
