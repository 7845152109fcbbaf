"""Negative usage never stops the close (chDB warehouse, embedded PostgreSQL ledger).

A `sum_agg` metric accepts negative values (a correction such as ``{"gb": "-3"}``).
Usage may therefore fall, per event, over a period, or after a period was invoiced;
no invoice line may be negative (the ledger and invoice contents refuse it, and one
refused draft would stop the close for every customer). The rules, as in Lago
(docs/billing-clock.md, "Negative usage"):

* a pay-in-advance charge bills each event the increase of the period's highest
  amount so far: an event that lowers the running units pays 0, and later events pay
  only once the units exceed the period's peak again (nothing is billed twice);
* an arrears charge prices a negative period total as 0 units;
* a late-usage adjustment bills only an increase over what earlier invoices billed.

Four consecutive closes on one store, every expected amount computed by hand below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import close
from billhouse.events import load_events
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from invoicing.ledger import FinalizedInvoice, list_invoices


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _plan(code: str, pay_in_advance: bool, model: str = "standard", properties: dict | None = None) -> dict:
    return {"code": code, "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR", "charges": [
        {"billable_metric_code": "gb", "charge_model": model, "pay_in_advance": pay_in_advance,
         "properties": properties or {"amount": "1"}}]}


SUBSCRIPTIONS = {"adv": "p_adv", "pct": "p_pct", "arr": "p_arr", "late": "p_arr", "ok": "p_arr"}
CATALOG = {
    "billable_metrics": [{"code": "gb", "aggregation_type": "sum_agg", "field_name": "gb"}],
    # 1 EUR per GB per event (pay in advance) and in arrears; 10 % of the GB per event
    "plans": [_plan("p_adv", True), _plan("p_arr", False), _plan("p_pct", True, "percentage", {"rate": "10"})],
    "customers": [{"external_id": f"cus_{sub}", "currency": "EUR", "timezone": "UTC"} for sub in SUBSCRIPTIONS],
    "subscriptions": [{"external_id": sub, "external_customer_id": f"cus_{sub}", "plan_code": plan,
                       "subscription_at": "2026-10-01T00:00:00Z"} for sub, plan in SUBSCRIPTIONS.items()],
}

# (transaction, subscription, timestamp, arrival, GB); a per-event fee is issued at the
# first midnight after the event both happened and arrived
EVENTS = [
    ("a1", "adv", "2026-10-05T10:00:00Z", "2026-10-05T12:00:00Z", "5"),
    ("a2", "adv", "2026-10-06T10:00:00Z", "2026-10-06T12:00:00Z", "-3"),  # a correction
    ("a3", "adv", "2026-10-07T10:00:00Z", "2026-10-07T12:00:00Z", "4"),
    ("a4", "adv", "2026-10-08T10:00:00Z", "2026-10-08T12:00:00Z", "-1"),
    ("p1", "pct", "2026-10-05T10:00:00Z", "2026-10-05T12:00:00Z", "50"),
    ("p2", "pct", "2026-10-06T10:00:00Z", "2026-10-06T12:00:00Z", "-30"),
    ("p3", "pct", "2026-10-07T10:00:00Z", "2026-10-07T12:00:00Z", "40"),
    ("r1", "arr", "2026-10-10T10:00:00Z", "2026-10-10T12:00:00Z", "2"),
    ("r2", "arr", "2026-10-11T10:00:00Z", "2026-10-11T12:00:00Z", "-7"),  # October: -5 GB
    ("l1", "late", "2026-10-12T10:00:00Z", "2026-10-12T12:00:00Z", "10"),
    ("l2", "late", "2026-10-20T10:00:00Z", "2026-11-02T12:00:00Z", "-4"),  # after October's invoice
    ("l3", "late", "2026-10-21T10:00:00Z", "2026-12-02T12:00:00Z", "6"),  # after November's invoice
    ("o1", "ok", "2026-10-13T10:00:00Z", "2026-10-13T12:00:00Z", "3"),
]

# consecutive closes; the events that arrived before each one are loaded first
CLOSES = [
    (datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 6, tzinfo=timezone.utc)),
    (datetime(2026, 10, 6, tzinfo=timezone.utc), datetime(2026, 11, 1, tzinfo=timezone.utc)),
    (datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc)),
    (datetime(2026, 12, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc)),
]

# every invoice line of the four closes: (customer, issuing date, fee, units, cents)
EXPECTED_LINES = {
    # pay in advance, 1 EUR per GB. a1: 0 -> 5 GB, 5.00. a2: 5 -> 2 GB, below the
    # period's peak of 5: 0 units, 0.00 (no negative line; the Oct 7 invoice holds only
    # it). a3: 2 -> 6 GB, 1 GB above the peak of 5: 1.00. a4: 6 -> 5 GB: 0.00. October
    # bills 6.00 for its peak of 6 GB, each GB once; the final 5 GB are not refunded.
    ("cus_adv", "2026-10-06", "a1", "5", 500),
    ("cus_adv", "2026-10-07", "a2", "0", 0),
    ("cus_adv", "2026-10-08", "a3", "1", 100),
    ("cus_adv", "2026-10-09", "a4", "0", 0),
    ("cus_adv", "2026-11-01", "subscription", "1", 0),
    ("cus_adv", "2026-12-01", "subscription", "1", 0),
    ("cus_adv", "2027-01-01", "subscription", "1", 0),
    # percentage 10 %, per event. p1: 10 % of 50 = 5.00. p2: 10 % of -30 = -3.00, the
    # running amount 2.00 is below the 5.00 billed: 0.00 (units: 50 -> 20 GB, peak 50).
    # p3: +4.00, running 6.00: 1.00 above the 5.00 billed (units: 60 GB, 10 above 50).
    ("cus_pct", "2026-10-06", "p1", "50", 500),
    ("cus_pct", "2026-10-07", "p2", "0", 0),
    ("cus_pct", "2026-10-08", "p3", "10", 100),
    ("cus_pct", "2026-11-01", "subscription", "1", 0),
    ("cus_pct", "2026-12-01", "subscription", "1", 0),
    ("cus_pct", "2027-01-01", "subscription", "1", 0),
    # arrears: October 2 - 7 = -5 GB prices as 0 GB
    ("cus_arr", "2026-11-01", "subscription", "1", 0),
    ("cus_arr", "2026-11-01", "charge", "0", 0),
    ("cus_arr", "2026-12-01", "subscription", "1", 0),
    ("cus_arr", "2026-12-01", "charge", "0", 0),
    ("cus_arr", "2027-01-01", "subscription", "1", 0),
    ("cus_arr", "2027-01-01", "charge", "0", 0),
    # late usage: October 10 GB invoiced Nov 1 (10.00). l2 (-4) arrives after: October
    # re-rates to 6 GB, below the 10 billed: no adjustment (nothing negative) on Dec 1.
    # l3 (+6) arrives after Dec 1: October re-rates to 12 GB, 2 above the 10 billed:
    # an adjustment of 2.00 on Jan 1.
    ("cus_late", "2026-11-01", "subscription", "1", 0),
    ("cus_late", "2026-11-01", "charge", "10", 1000),
    ("cus_late", "2026-12-01", "subscription", "1", 0),
    ("cus_late", "2026-12-01", "charge", "0", 0),
    ("cus_late", "2027-01-01", "subscription", "1", 0),
    ("cus_late", "2027-01-01", "charge", "0", 0),
    ("cus_late", "2027-01-01", "adjustment", "2", 200),
    # an unaffected customer, on the same closes
    ("cus_ok", "2026-11-01", "subscription", "1", 0),
    ("cus_ok", "2026-11-01", "charge", "3", 300),
    ("cus_ok", "2026-12-01", "subscription", "1", 0),
    ("cus_ok", "2026-12-01", "charge", "0", 0),
    ("cus_ok", "2027-01-01", "subscription", "1", 0),
    ("cus_ok", "2027-01-01", "charge", "0", 0),
}


@dataclass
class Closed:
    errors: list[str] = field(default_factory=list)  # one per failed close
    invoices: list[FinalizedInvoice] = field(default_factory=list)  # the ledger after the closes
    rerun_created: int = -1  # invoices created by re-running the last close


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("negative-usage")))
    catalog = parse_catalog(CATALOG, source="tests/test_negative_usage.py")
    result = Closed()
    loaded: set[str] = set()
    try:
        with open_warehouse(settings) as warehouse:
            warehouse.replace_catalog(catalog)
        for number, (since, as_of) in enumerate(CLOSES):
            arrived = [e for e in EVENTS if _utc(e[3]) < as_of and e[0] not in loaded]
            with open_warehouse(settings) as warehouse:
                for tx, sub, at, arrival, gb in arrived:
                    load_events(warehouse, [{"transaction_id": tx, "external_subscription_id": sub, "code": "gb",
                                             "timestamp": at, "properties": {"gb": gb}}],
                                catalog, ingested_at=_utc(arrival))
                    loaded.add(tx)
            try:
                # the first close runs the drafts' data tests; the others only the models
                close(settings, as_of, since=since, refresh_finance_marts=False,
                      **({} if number == 0 else {"dbt_args": ("run",)}))
            except Exception as exc:  # recorded: the tests below say which close failed and why
                result.errors.append(f"close to {as_of.date()}: {type(exc).__name__}: {exc}")
        since, as_of = CLOSES[-1]
        try:
            result.rerun_created = len(close(settings, as_of, since=since, refresh_finance_marts=False,
                                             dbt_args=("run",)).created)
        except Exception as exc:
            result.errors.append(f"re-run to {as_of.date()}: {type(exc).__name__}: {exc}")
        with ledger(settings) as conn:
            result.invoices = list_invoices(conn)
        yield result
    finally:
        stop_ledger(settings)


def _line(fee_key: str, kind: str) -> str:
    """A per-event fee by its transaction id, any other fee by its kind."""
    return fee_key.rsplit("/", 1)[-1] if "/event/" in fee_key else kind


def test_no_close_fails_because_usage_is_negative(closed: Closed) -> None:
    assert closed.errors == []


def test_every_invoice_line_is_the_hand_computed_one_and_none_is_negative(closed: Closed) -> None:
    lines = {(i.external_customer_id, i.issuing_date.isoformat(), _line(f.fee_key, f.kind), str(f.units),
              f.amount_cents) for i in closed.invoices for f in i.fees}
    assert {(c, d, k, str(Decimal(u)), cents) for c, d, k, u, cents in EXPECTED_LINES} == {
        (c, d, k, str(Decimal(u)), cents) for c, d, k, u, cents in lines}
    assert all(f.amount_cents >= 0 and f.units >= 0 for i in closed.invoices for f in i.fees)


def test_invoice_totals_are_their_lines_and_never_negative(closed: Closed) -> None:
    totals = {(i.external_customer_id, i.issuing_date): i.total_cents for i in closed.invoices}
    assert totals[("cus_adv", date(2026, 10, 7))] == 0  # the correction's invoice
    assert totals[("cus_adv", date(2026, 10, 8))] == 100
    assert totals[("cus_late", date(2027, 1, 1))] == 200
    assert all(i.total_cents == sum(f.amount_cents for f in i.fees) >= 0 for i in closed.invoices)
    # one invoice per customer and issuing date: adv 7, pct 6, arr, late, ok 3 each
    assert len(closed.invoices) == 22


def test_the_pay_in_advance_period_bills_its_peak_once(closed: Closed) -> None:
    # October's peak is 6 GB (5, then 2, then 6): 6.00 in all, never more, never less
    adv = [f for i in closed.invoices if i.external_customer_id == "cus_adv" for f in i.fees if "/event/" in f.fee_key]
    assert sum(f.amount_cents for f in adv) == 600
    assert sum(f.units for f in adv) == Decimal(6)


def test_rerunning_the_last_close_creates_nothing(closed: Closed) -> None:
    assert closed.rerun_created == 0
