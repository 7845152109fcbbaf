"""Finance marts on a ledger with hand-made history, and the reporting API serving them.

History (all invoices hand-made drafts finalized into a real embedded-PostgreSQL ledger,
January to June 2026; marts built once by dbt on chDB as of 2026-07-01):

==========  ======================================================================
cus_grow    basic (10.00/month) Jan-Feb, upgrade to pro (30.00) Mar-Apr, downgrade
            to basic May-Jun; a 10.00 credit note on the April invoice (May 10)
            whose credit pays the June 1 invoice; January usage 2.50
cus_churn   basic Jan-Feb (a 5.00 wallet pays half of the first invoice), nothing in
            March-April (churn), pro May-Jun (reactivation)
cus_year    yearly plan 1200.00 billed in advance on 2026-03-01, net 30, never paid
            (92 days past due on July 1); an erroneous April invoice, voided. Its
            plan is not in the catalog (yearly plans are not loadable yet), so
            fct_mrr infers the interval from the fee's 365-day period
cus_usd     USD, starter 5.00/month Apr-Jun plus usage, net 15; a 5.00 coupon on the
            first invoice; the June 1 invoice partly paid (3.00)
==========  ======================================================================

Every expected figure below is computed by hand from that table.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.finance_snapshot import load_snapshot
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.ledger_sync import refresh_finance
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.api_keys import create_api_key
from ingestion.process import ServerProcess
from invoicing.coupons import Coupon, apply_coupon, create_coupon
from invoicing.credit_notes import create_credit_note
from invoicing.customers import set_net_payment_term
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.finalize import finalize_drafts
from invoicing.lifecycle import void_invoice
from invoicing.migrations import migrate
from invoicing.wallets import create_wallet, top_up_wallet

AS_OF = datetime(2026, 7, 1, tzinfo=timezone.utc)

CATALOG = {
    "billable_metrics": [
        {"code": "api_calls", "name": "API calls", "aggregation_type": "count_agg"},
        {"code": "storage_gb", "name": "Storage", "aggregation_type": "max_agg", "field_name": "gb"},
    ],
    "plans": [
        {"code": "basic", "name": "Basic", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
         "charges": [{"billable_metric_code": "api_calls", "charge_model": "standard",
                      "properties": {"amount": "0.025"}}]},
        {"code": "pro", "name": "Pro", "interval": "monthly", "amount_cents": 3000, "amount_currency": "EUR"},
        {"code": "starter_usd", "name": "Starter", "interval": "monthly", "amount_cents": 500,
         "amount_currency": "USD",
         "charges": [{"billable_metric_code": "storage_gb", "charge_model": "standard",
                      "properties": {"amount": "1"}}]},
    ],
    "customers": [
        {"external_id": "cus_grow", "name": "Grow SA", "currency": "EUR"},
        {"external_id": "cus_churn", "name": "Churn SARL", "currency": "EUR"},
        {"external_id": "cus_year", "name": "Year AG", "currency": "EUR"},
        {"external_id": "cus_usd", "name": "Dollar Inc", "currency": "USD"},
    ],
    "subscriptions": [
        {"external_id": "sub_grow_basic", "external_customer_id": "cus_grow", "plan_code": "basic",
         "subscription_at": "2026-01-01T00:00:00Z", "ending_at": "2026-03-01T00:00:00Z"},
        {"external_id": "sub_grow_pro", "external_customer_id": "cus_grow", "plan_code": "pro",
         "subscription_at": "2026-03-01T00:00:00Z", "ending_at": "2026-05-01T00:00:00Z"},
        {"external_id": "sub_grow_basic2", "external_customer_id": "cus_grow", "plan_code": "basic",
         "subscription_at": "2026-05-01T00:00:00Z"},
        {"external_id": "sub_churn_basic", "external_customer_id": "cus_churn", "plan_code": "basic",
         "subscription_at": "2026-01-01T00:00:00Z", "ending_at": "2026-03-01T00:00:00Z"},
        {"external_id": "sub_churn_pro", "external_customer_id": "cus_churn", "plan_code": "pro",
         "subscription_at": "2026-05-01T00:00:00Z"},
        {"external_id": "sub_usd", "external_customer_id": "cus_usd", "plan_code": "starter_usd",
         "subscription_at": "2026-04-01T00:00:00Z"},
    ],
}


def _event(tx: str, sub: str, code: str, ts: str, **properties: object) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code, "timestamp": ts,
            "properties": properties}


EVENTS = [
    *[_event(f"g-{i}", "sub_grow_basic", "api_calls", "2026-01-05T10:00:00Z") for i in range(3)],
    _event("g-0", "sub_grow_basic", "api_calls", "2026-01-05T10:00:00Z"),  # a duplicate: counted once
    _event("g-late", "sub_grow_basic", "api_calls", "2026-01-05T23:59:59.999Z"),
    _event("g-next", "sub_grow_basic", "api_calls", "2026-01-06T00:00:00Z"),
    _event("u-1", "sub_usd", "storage_gb", "2026-04-03T08:00:00Z", gb="5"),
    _event("u-2", "sub_usd", "storage_gb", "2026-04-03T09:00:00Z", gb="7.5"),
    _event("u-3", "sub_usd", "storage_gb", "2026-04-03T10:00:00Z", gb="6"),
]


def _utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def _month(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _subscription_fee(sub: str, plan: str, cents: int, start: datetime, end: datetime, exponent: int = 2) -> DraftFee:
    amount = Decimal(cents) / 10**exponent
    return DraftFee(f"{sub}/subscription/{start.date()}", "subscription", sub, plan, None, None, plan.title(),
                    start, end, Decimal(1), amount, amount, cents)


def _charge_fee(sub: str, plan: str, metric: str, cents: int, start: datetime, end: datetime) -> DraftFee:
    amount = Decimal(cents) / 100
    return DraftFee(f"{sub}/{metric}/{start.date()}", "charge", sub, plan, metric, "standard", metric,
                    start, end, Decimal(cents), Decimal("0.01"), amount, cents)


def _draft(customer: str, name: str, currency: str, issued: date, *fees: DraftFee) -> InvoiceDraft:
    total = sum(fee.amount_cents for fee in fees)
    return InvoiceDraft(
        invoice_key=f"{customer}/{currency}/{issued}/{fees[0].fee_key}", external_customer_id=customer,
        customer_name=name, currency=currency, currency_exponent=2, issuing_date=issued,
        period_start=min(fee.period_start for fee in fees), period_end=max(fee.period_end for fee in fees),
        sub_total_cents=total, total_cents=total, fees=fees,
    )


def _pay(conn: Any, invoice: Any, amount_cents: int, on: date, *, settles: bool) -> None:
    """A succeeded card payment, written as the payments module records one."""
    finished = _utc(on) + timedelta(hours=12)
    with conn.transaction():
        conn.execute(
            "INSERT INTO invoice_collections (invoice_id, amount_due_cents, currency, due_date, state)"
            " VALUES (%s, %s, %s, %s, %s)",
            (invoice.id, invoice.total_cents, invoice.currency, invoice.due_date,
             "succeeded" if settles else "collecting"),
        )
        conn.execute(
            "INSERT INTO payment_attempts (invoice_id, attempt_number, idempotency_key, amount_cents, currency,"
            " stripe_customer_id, payment_method_id, status, started_at, finished_at)"
            " VALUES (%s, 1, %s, %s, %s, 'cus_test', 'pm_test', 'succeeded', %s, %s)",
            (invoice.id, f"pay/{invoice.number}", amount_cents, invoice.currency, finished, finished),
        )
        if settles:
            conn.execute("UPDATE invoices SET payment_status = 'succeeded' WHERE id = %s", (invoice.id,))


@dataclass
class History:
    settings: Settings
    numbers: dict[str, str]  # label -> invoice number
    ids: dict[str, str]  # label -> ledger invoice id

    def query(self, sql: str) -> list[dict[str, Any]]:
        with open_warehouse(self.settings) as warehouse:
            return warehouse.query(sql)


def _finalize(conn: Any, label: str, draft: InvoiceDraft, history: History) -> Any:
    (invoice,) = finalize_drafts(conn, [draft])
    history.numbers[label] = invoice.number
    history.ids[label] = str(invoice.id)
    return invoice


def _write_history(conn: Any, history: History) -> None:
    migrate(conn)
    set_net_payment_term(conn, "cus_year", 30)
    set_net_payment_term(conn, "cus_usd", 15)
    create_wallet(conn, "cus_churn", "EUR")
    top_up_wallet(conn, "cus_churn", idempotency_key="churn-wallet", paid_credits="5")
    create_coupon(conn, Coupon("usd5", "USD 5 off", "fixed_amount", "once", amount_cents=500, amount_currency="USD"))
    apply_coupon(conn, "cus_usd", "usd5", idempotency_key="usd5-cus_usd")
    m = {month: _month(2026, month) for month in range(1, 7)}
    d = date

    inv = _finalize(conn, "grow_jan", _draft("cus_grow", "Grow SA", "EUR", d(2026, 2, 1),
                    _subscription_fee("sub_grow_basic", "basic", 1000, *m[1]),
                    _charge_fee("sub_grow_basic", "basic", "api_calls", 250, *m[1])), history)
    _pay(conn, inv, 1250, d(2026, 2, 1), settles=True)
    inv = _finalize(conn, "churn_jan", _draft("cus_churn", "Churn SARL", "EUR", d(2026, 2, 1),
                    _subscription_fee("sub_churn_basic", "basic", 1000, *m[1])), history)
    assert (inv.prepaid_credits_cents, inv.total_cents) == (500, 500)
    _pay(conn, inv, 500, d(2026, 2, 2), settles=True)
    inv = _finalize(conn, "grow_feb", _draft("cus_grow", "Grow SA", "EUR", d(2026, 3, 1),
                    _subscription_fee("sub_grow_basic", "basic", 1000, *m[2])), history)
    _pay(conn, inv, 1000, d(2026, 3, 1), settles=True)
    inv = _finalize(conn, "churn_feb", _draft("cus_churn", "Churn SARL", "EUR", d(2026, 3, 1),
                    _subscription_fee("sub_churn_basic", "basic", 1000, *m[2])), history)
    _pay(conn, inv, 1000, d(2026, 3, 1), settles=True)
    _finalize(conn, "year", _draft("cus_year", "Year AG", "EUR", d(2026, 3, 1),
              _subscription_fee("sub_year", "annual", 120000, m[3][0], datetime(2027, 3, 1, tzinfo=timezone.utc))),
              history)
    inv = _finalize(conn, "grow_mar", _draft("cus_grow", "Grow SA", "EUR", d(2026, 4, 1),
                    _subscription_fee("sub_grow_pro", "pro", 3000, *m[3])), history)
    _pay(conn, inv, 3000, d(2026, 4, 1), settles=True)
    inv = _finalize(conn, "year_wrong", _draft("cus_year", "Year AG", "EUR", d(2026, 4, 1),
                    _charge_fee("sub_year", "annual", "api_calls", 5000, *m[3])), history)
    void_invoice(conn, inv.id)
    conn.execute("UPDATE invoices SET voided_at = '2026-04-02T09:00:00Z' WHERE id = %s", (inv.id,))
    inv = _finalize(conn, "grow_apr", _draft("cus_grow", "Grow SA", "EUR", d(2026, 5, 1),
                    _subscription_fee("sub_grow_pro", "pro", 3000, *m[4])), history)
    _pay(conn, inv, 3000, d(2026, 5, 1), settles=True)
    note = create_credit_note(conn, inv.id, idempotency_key="cn-grow-apr", credit_amount_cents=1000,
                              reason="order_change")
    conn.execute("UPDATE credit_notes SET created_at = '2026-05-10T09:00:00Z' WHERE id = %s", (note.id,))
    inv = _finalize(conn, "usd_apr", _draft("cus_usd", "Dollar Inc", "USD", d(2026, 5, 1),
                    _subscription_fee("sub_usd", "starter_usd", 500, *m[4]),
                    _charge_fee("sub_usd", "starter_usd", "storage_gb", 1234, *m[4])), history)
    assert (inv.coupons_cents, inv.total_cents) == (500, 1234)
    inv = _finalize(conn, "grow_may", _draft("cus_grow", "Grow SA", "EUR", d(2026, 6, 1),
                    _subscription_fee("sub_grow_basic2", "basic", 1000, *m[5])), history)
    assert (inv.credit_notes_cents, inv.total_cents) == (1000, 0)
    inv = _finalize(conn, "churn_may", _draft("cus_churn", "Churn SARL", "EUR", d(2026, 6, 1),
                    _subscription_fee("sub_churn_pro", "pro", 3000, *m[5])), history)
    _pay(conn, inv, 3000, d(2026, 6, 1), settles=True)
    inv = _finalize(conn, "usd_may", _draft("cus_usd", "Dollar Inc", "USD", d(2026, 6, 1),
                    _subscription_fee("sub_usd", "starter_usd", 500, *m[5]),
                    _charge_fee("sub_usd", "starter_usd", "storage_gb", 766, *m[5])), history)
    _pay(conn, inv, 300, d(2026, 6, 20), settles=False)  # partial payment
    _finalize(conn, "grow_jun", _draft("cus_grow", "Grow SA", "EUR", d(2026, 7, 1),
              _subscription_fee("sub_grow_basic2", "basic", 1000, *m[6])), history)
    _finalize(conn, "churn_jun", _draft("cus_churn", "Churn SARL", "EUR", d(2026, 7, 1),
              _subscription_fee("sub_churn_pro", "pro", 3000, *m[6])), history)
    _finalize(conn, "usd_jun", _draft("cus_usd", "Dollar Inc", "USD", d(2026, 7, 1),
              _subscription_fee("sub_usd", "starter_usd", 500, *m[6])), history)


def _build_history(tmp_path_factory: pytest.TempPathFactory, warehouse_target: str) -> Iterator[History]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp(f"finance-{warehouse_target}")),
                        warehouse_target=warehouse_target)
    load_inputs(settings, parse_catalog(CATALOG, source="tests/test_finance.py"), EVENTS)
    built = History(settings, {}, {})
    try:
        with ledger(settings) as conn:
            _write_history(conn, built)
        # one dbt invocation: the finance models and what they read from the warehouse
        refresh_finance(settings, AS_OF, select="+tag:finance")
        yield built
    finally:
        stop_ledger(settings)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history on the embedded ClickHouse warehouse (chDB)."""
    yield from _build_history(tmp_path_factory, "chdb")


@pytest.fixture(scope="module")
def postgres_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The same history on the PostgreSQL warehouse target (its own ledger and data dir)."""
    yield from _build_history(tmp_path_factory, "postgres")


def _by(rows: list[dict[str, Any]], *keys: str, value: str) -> dict[tuple, Any]:
    return {tuple(str(row[key]) for key in keys): row[value] for row in rows}


def test_revenue_by_month_is_net_of_coupons_and_credit_notes_and_excludes_voided_invoices(history: History) -> None:
    rows = history.query(
        "select currency, revenue_month, sum(net_revenue_cents) as net from billhouse.fct_revenue"
        " group by currency, revenue_month"
    )
    assert _by(rows, "currency", "revenue_month", value="net") == {
        ("EUR", "2026-02-01"): 2250,  # the wallet paid part of cus_churn's invoice: settlement, not a discount
        ("EUR", "2026-03-01"): 122000,
        ("EUR", "2026-04-01"): 3000,  # the voided 50.00 invoice is not revenue
        ("EUR", "2026-05-01"): 2000,  # 30.00 less the 10.00 credit note of May 10
        ("EUR", "2026-06-01"): 4000,  # the credit-note credit that paid cus_grow's invoice is not a discount
        ("EUR", "2026-07-01"): 4000,
        ("USD", "2026-05-01"): 1234,  # 17.34 less the 5.00 coupon
        ("USD", "2026-06-01"): 1266,
        ("USD", "2026-07-01"): 500,
    }


def test_revenue_lines_carry_invoice_numbers_and_split_coupons_and_credit_notes_by_largest_remainder(
    history: History,
) -> None:
    rows = history.query(
        "select line_type, revenue_date, invoice_number, credit_note_number, plan_code, fee_kind,"
        " billable_metric_code, gross_amount_cents, coupons_amount_cents, credit_notes_amount_cents,"
        " net_revenue_cents from billhouse.fct_revenue where external_customer_id in ('cus_usd', 'cus_grow')"
        " and revenue_month in ('2026-05-01')"
        " order by invoice_number, line_type, fee_kind"
    )
    n = history.numbers
    assert [tuple(str(v) for v in row.values()) for row in rows] == [
        ("credit_note", "2026-05-10", n["grow_apr"], f"{n['grow_apr']}-CN001", "pro", "subscription", "None",
         "0", "0", "1000", "-1000"),
        ("fee", "2026-05-01", n["grow_apr"], "None", "pro", "subscription", "None", "3000", "0", "0", "3000"),
        # 5.00 over 5.00 + 12.34: 144.18 and 355.82 -> 144 and 356
        ("fee", "2026-05-01", n["usd_apr"], "None", "starter_usd", "charge", "storage_gb", "1234", "356", "0", "878"),
        ("fee", "2026-05-01", n["usd_apr"], "None", "starter_usd", "subscription", "None", "500", "144", "0", "356"),
    ]


def test_revenue_by_plan_and_metric(history: History) -> None:
    rows = history.query(
        "select currency, coalesce(plan_code, '') as plan, coalesce(billable_metric_code, '') as metric,"
        " sum(net_revenue_cents) as net from billhouse.fct_revenue group by currency, plan_code, billable_metric_code"
    )
    assert _by(rows, "currency", "plan", "metric", value="net") == {
        ("EUR", "basic", ""): 6000,
        ("EUR", "basic", "api_calls"): 250,
        ("EUR", "pro", ""): 11000,  # 4 x 30.00 less the 10.00 credit note
        ("EUR", "annual", ""): 120000,
        ("USD", "starter_usd", ""): 1356,
        ("USD", "starter_usd", "storage_gb"): 1644,
    }


MRR = {  # (customer, month): (beginning, new, expansion, contraction, churned, reactivation, ending)
    ("cus_grow", "2026-01-01"): (0, 1000, 0, 0, 0, 0, 1000),
    ("cus_grow", "2026-02-01"): (1000, 0, 0, 0, 0, 0, 1000),
    ("cus_grow", "2026-03-01"): (1000, 0, 2000, 0, 0, 0, 3000),  # upgrade basic -> pro
    ("cus_grow", "2026-04-01"): (3000, 0, 0, 0, 0, 0, 3000),
    ("cus_grow", "2026-05-01"): (3000, 0, 0, -2000, 0, 0, 1000),  # downgrade pro -> basic
    ("cus_grow", "2026-06-01"): (1000, 0, 0, 0, 0, 0, 1000),
    ("cus_churn", "2026-01-01"): (0, 1000, 0, 0, 0, 0, 1000),
    ("cus_churn", "2026-02-01"): (1000, 0, 0, 0, 0, 0, 1000),
    ("cus_churn", "2026-03-01"): (1000, 0, 0, 0, -1000, 0, 0),  # churn; April (0 -> 0) has no row
    ("cus_churn", "2026-05-01"): (0, 0, 0, 0, 0, 3000, 3000),  # reactivation on pro
    ("cus_churn", "2026-06-01"): (3000, 0, 0, 0, 0, 0, 3000),
    ("cus_year", "2026-03-01"): (0, 10000, 0, 0, 0, 0, 10000),  # 1200.00 a year = 100.00 a month
    ("cus_year", "2026-04-01"): (10000, 0, 0, 0, 0, 0, 10000),
    ("cus_year", "2026-05-01"): (10000, 0, 0, 0, 0, 0, 10000),
    ("cus_year", "2026-06-01"): (10000, 0, 0, 0, 0, 0, 10000),  # July: not a complete month by the as-of date
    ("cus_usd", "2026-04-01"): (0, 500, 0, 0, 0, 0, 500),
    ("cus_usd", "2026-05-01"): (500, 0, 0, 0, 0, 0, 500),  # usage never counts as MRR
    ("cus_usd", "2026-06-01"): (500, 0, 0, 0, 0, 0, 500),
}
MOVEMENTS = ("beginning_mrr_cents", "new_mrr_cents", "expansion_mrr_cents", "contraction_mrr_cents",
             "churned_mrr_cents", "reactivation_mrr_cents", "ending_mrr_cents")


def test_mrr_movements_per_customer_and_month(history: History) -> None:
    rows = history.query(f"select external_customer_id, mrr_month, {', '.join(MOVEMENTS)} from billhouse.fct_mrr")
    assert {(r["external_customer_id"], str(r["mrr_month"])): tuple(r[m] for m in MOVEMENTS) for r in rows} == MRR


def test_mrr_movements_sum_from_one_month_to_the_next_for_every_month(history: History) -> None:
    rows = history.query(f"select external_customer_id, currency, mrr_month, {', '.join(MOVEMENTS)} from billhouse.fct_mrr")
    ending = {(r["external_customer_id"], r["currency"], r["mrr_month"]): r["ending_mrr_cents"] for r in rows}
    for row in rows:
        beginning, *moves, end = (row[m] for m in MOVEMENTS)
        assert beginning + sum(moves) == end, row
        month = row["mrr_month"]
        previous = date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)
        assert beginning == ending.get((row["external_customer_id"], row["currency"], previous), 0), row
    totals: dict[tuple[str, date], list[int]] = {}
    for row in rows:
        acc = totals.setdefault((row["currency"], row["mrr_month"]), [0] * len(MOVEMENTS))
        for i, m in enumerate(MOVEMENTS):
            acc[i] += row[m]
    eur = [totals[("EUR", date(2026, m, 1))][-1] for m in range(1, 7)]
    assert eur == [2000, 2000, 13000, 13000, 14000, 14000]
    for (currency, month), acc in totals.items():  # every month, not only customers' rows
        assert acc[0] + sum(acc[1:-1]) == acc[-1]


def test_receivables_aging_buckets_as_of_the_date(history: History) -> None:
    rows = history.query("select * from billhouse.fct_receivables_aging")
    got = {
        (r["external_customer_id"], r["currency"]): (
            r["open_invoices_count"], r["open_amount_cents"], r["current_cents"], r["past_due_1_30_cents"],
            r["past_due_31_60_cents"], r["past_due_61_90_cents"], r["past_due_over_90_cents"], r["overdue_cents"],
        )
        for r in rows
    }
    assert got == {
        # due Mar 31 (net 30), 92 days past due; the voided April invoice is not owed
        ("cus_year", "EUR"): (1, 120000, 0, 0, 0, 0, 120000, 120000),
        # due May 16: 46 days; due Jun 16, 3.00 of 12.66 paid: 15 days; due Jul 16: current
        ("cus_usd", "USD"): (3, 2700, 500, 966, 1234, 0, 0, 2200),
        # the June 1 invoice was paid by a credit note's credit (0 due); Jul 1 is due on issue
        ("cus_grow", "EUR"): (1, 1000, 1000, 0, 0, 0, 0, 0),
        ("cus_churn", "EUR"): (1, 3000, 3000, 0, 0, 0, 0, 0),
    }
    assert {str(r["as_of_date"]) for r in rows} == {"2026-07-01"}


def test_usage_per_customer_metric_and_day_from_deduplicated_events(history: History) -> None:
    rows = history.query("select * from billhouse.fct_usage")
    got = {(r["external_customer_id"], r["billable_metric_code"], str(r["usage_date"])): (r["events_count"], r["units"])
           for r in rows}
    assert got == {
        ("cus_grow", "api_calls", "2026-01-05"): (4, Decimal(4)),  # a resent event counts once
        ("cus_grow", "api_calls", "2026-01-06"): (1, Decimal(1)),  # midnight belongs to the next day
        ("cus_usd", "storage_gb", "2026-04-03"): (3, Decimal("7.5")),  # max_agg: the day's maximum
    }


def _month_key(value: Any) -> str:
    return f"{str(value)[:10]}T00:00:00.000Z"


def test_reporting_endpoints_over_http_return_the_marts_numbers(history: History) -> None:
    marts = {
        "gross_revenue": {
            (_month_key(r["m"]), r["currency"]): r["net"]
            for r in history.query("select revenue_month as m, currency, sum(net_revenue_cents) as net"
                                   " from billhouse.fct_revenue group by revenue_month, currency")
        },
        "mrr": {
            (_month_key(r["m"]), r["currency"]): r["mrr"]
            for r in history.query("select mrr_month as m, currency, sum(ending_mrr_cents) as mrr"
                                   " from billhouse.fct_mrr group by mrr_month, currency")
        },
        "overdue_balance": {
            (_month_key(r["due_date"])[:8] + "01T00:00:00.000Z", r["currency"]): r["open_amount_cents"]
            for r in history.query("select due_date, currency, open_amount_cents"
                                   " from billhouse.int_receivables_open_invoices where days_past_due > 0")
        },
        "invoiced_usage": {
            (_month_key(r["m"]), r["currency"], r["code"]): r["amount"]
            for r in history.query("select revenue_month as m, currency, billable_metric_code as code,"
                                   " sum(gross_amount_cents) as amount from billhouse.fct_revenue"
                                   " where line_type = 'fee' and fee_kind = 'charge'"
                                   " group by revenue_month, currency, billable_metric_code")
        },
    }
    with ledger(history.settings) as conn:
        key = create_api_key(conn, "finance-test").secret
    with ServerProcess(history.settings.data_dir) as server:
        http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        got = {}
        for path, items in (("gross_revenue", "gross_revenues"), ("mrr", "mrrs"),
                            ("overdue_balance", "overdue_balances"), ("invoiced_usage", "invoiced_usages")):
            response = http.get(f"/api/v1/analytics/{path}")
            assert response.status_code == 200, response.text
            rows = response.json()[items]
            keyed = {(r["month"], r["currency"], *([r["code"]] if path == "invoiced_usage" else [])): r["amount_cents"]
                     for r in rows}
            got[path] = keyed
        assert got == marts
        assert got["mrr"][("2026-06-01T00:00:00.000Z", "EUR")] == 14000
        assert got["overdue_balance"] == {("2026-03-01T00:00:00.000Z", "EUR"): 120000,
                                          ("2026-05-01T00:00:00.000Z", "USD"): 1234,
                                          ("2026-06-01T00:00:00.000Z", "USD"): 966}
        overdue = http.get("/api/v1/analytics/overdue_balance", params={"currency": "EUR"}).json()
        assert overdue == {"overdue_balances": [{"month": "2026-03-01T00:00:00.000Z", "currency": "EUR",
                                                 "amount_cents": 120000, "lago_invoice_ids": [history.ids["year"]]}]}
        # months: the last N months up to the as-of month (July 2026)
        recent = http.get("/api/v1/analytics/gross_revenue", params={"currency": "USD", "months": "2"}).json()
        assert recent == {"gross_revenues": [
            {"month": "2026-06-01T00:00:00.000Z", "currency": "USD", "amount_cents": 1266, "invoices_count": 1},
            {"month": "2026-07-01T00:00:00.000Z", "currency": "USD", "amount_cents": 500, "invoices_count": 1},
        ]}
        assert http.get("/api/v1/analytics/mrr", params={"months": "0"}).status_code == 422
        assert http.get("/api/v1/analytics/mrr", params={"currency": "euro"}).status_code == 422
        assert httpx.get(server.url + "/api/v1/analytics/mrr").status_code == 401


# --- the same marts on the PostgreSQL warehouse ------------------------------------

MART_KEYS = {  # mart -> columns not compared: ledger ids (random per ledger, compared by invoice label
    # instead) and fct_usage's bookkeeping of the ClickHouse incremental builds (constants on PostgreSQL)
    "fct_revenue": ("revenue_line_id", "invoice_id"),
    "fct_mrr": (),
    "fct_receivables_aging": (),
    "int_receivables_open_invoices": ("invoice_id",),
    "fct_usage": ("computed_through_block", "events_table_uuid", "inputs_fingerprint"),
}


def _comparable(value: Any) -> Any:
    """Engine-neutral value: numbers as normalized Decimals, dates as ISO dates."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, Decimal)):
        return Decimal(value).normalize()
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"unexpected {type(value).__name__}: {value!r}")


def _mart_rows(history: History, mart: str) -> tuple[list[str], list[tuple]]:
    rows = history.query(f"select * from billhouse.{mart}")
    ids = set(MART_KEYS[mart])
    columns = sorted(rows[0]) if rows else []
    kept = [c for c in columns if c not in ids]
    return columns, sorted((tuple(_comparable(row[c]) for c in kept) for row in rows), key=repr)


@pytest.mark.parametrize("mart", sorted(MART_KEYS))
def test_marts_on_postgres_equal_the_marts_on_chdb_for_the_same_ledger_history(
    history: History, postgres_history: History, mart: str
) -> None:
    chdb_columns, chdb_rows = _mart_rows(history, mart)
    postgres_columns, postgres_rows = _mart_rows(postgres_history, mart)
    assert postgres_columns == chdb_columns
    assert chdb_rows, mart
    assert postgres_rows == chdb_rows
    assert postgres_history.numbers == history.numbers  # the same invoices carry the same numbers


def test_reporting_snapshot_on_postgres_equals_the_chdb_snapshot(history: History, postgres_history: History) -> None:
    def labelled(h: History) -> dict[str, Any]:
        document = load_snapshot(h.settings.data_dir)
        assert document is not None
        label_of = {invoice_id: label for label, invoice_id in h.ids.items()}
        for entry in document["overdue_balance"]:
            entry["lago_invoice_ids"] = [label_of[i] for i in entry["lago_invoice_ids"]]
        document.pop("exported_at")
        return document

    assert labelled(postgres_history) == labelled(history)


# --- the HTML revenue report -----------------------------------------------------------


class _ReportParser(HTMLParser):
    """Collects the report's tables (by id, rows of cell texts) and KPI values by section."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.kpis: dict[tuple[str, str], str] = {}
        self.tags: list[str] = []
        self._section = ""
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._kpi: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self._section = (attributes.get("id") or "").removeprefix("currency-")
        elif tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif attributes.get("data-kpi"):
            self._kpi = attributes["data-kpi"]
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "div" and self._kpi and self._cell is not None:
            self.kpis[(self._section, self._kpi)] = "".join(self._cell).strip()
            self._kpi, self._cell = None, None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_report(html: str) -> _ReportParser:
    parser = _ReportParser()
    parser.feed(html)
    return parser


def test_report_shows_the_marts_numbers_and_never_opens_the_store(history: History, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    # The report reads the snapshot only: it runs while this process holds the chDB store.
    with open_warehouse(history.settings):
        completed = subprocess.run(
            [sys.executable, "-m", "billhouse.cli", "--data-dir", str(history.settings.data_dir), "report",
             "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"wrote {out}"
    html = out.read_text()
    report = parse_report(html)
    _ = "–"  # a movement of zero
    assert report.tables["mrr-EUR"][1:] == [
        # month, beginning, new, expansion, reactivation, contraction, churn, ending
        ["Jan 2026", "€0.00", "€20.00", _, _, _, _, "€20.00"],
        ["Feb 2026", "€20.00", _, _, _, _, _, "€20.00"],
        ["Mar 2026", "€20.00", "€100.00", "€20.00", _, _, "-€10.00", "€130.00"],  # year plan new, upgrade, churn
        ["Apr 2026", "€130.00", _, _, _, _, _, "€130.00"],
        ["May 2026", "€130.00", _, _, "€30.00", "-€20.00", _, "€140.00"],  # reactivation, downgrade
        ["Jun 2026", "€140.00", _, _, _, _, _, "€140.00"],
    ]
    assert report.tables["mrr-USD"][1:] == [
        ["Apr 2026", "$0.00", "$5.00", _, _, _, _, "$5.00"],
        ["May 2026", "$5.00", _, _, _, _, _, "$5.00"],
        ["Jun 2026", "$5.00", _, _, _, _, _, "$5.00"],
    ]
    assert report.tables["revenue-EUR"][1:] == [
        ["Feb 2026", "2", "€22.50"], ["Mar 2026", "3", "€1,220.00"], ["Apr 2026", "1", "€30.00"],
        ["May 2026", "1", "€20.00"], ["Jun 2026", "2", "€40.00"], ["Jul 2026", "2", "€40.00"],
        ["Total", "", "€1,372.50"],
    ]
    assert report.tables["aging-USD"][1:] == [
        # customer, current, 1-30, 31-60, 61-90, 90+, overdue, open
        ["Dollar Inc", "$5.00", "$9.66", "$12.34", "$0.00", "$0.00", "$22.00", "$27.00"],
        ["All customers", "$5.00", "$9.66", "$12.34", "$0.00", "$0.00", "$22.00", "$27.00"],
    ]
    assert report.tables["aging-EUR"][1:] == [
        ["Year AG", "€0.00", "€0.00", "€0.00", "€0.00", "€1,200.00", "€1,200.00", "€1,200.00"],
        ["Churn SARL", "€30.00", "€0.00", "€0.00", "€0.00", "€0.00", "€0.00", "€30.00"],
        ["Grow SA", "€10.00", "€0.00", "€0.00", "€0.00", "€0.00", "€0.00", "€10.00"],
        ["All customers", "€40.00", "€0.00", "€0.00", "€0.00", "€1,200.00", "€1,200.00", "€1,240.00"],
    ]
    assert report.kpis == {
        ("EUR", "mrr"): "€140.00", ("EUR", "arr"): "€1,680.00", ("EUR", "revenue"): "€1,372.50",
        ("EUR", "overdue"): "€1,200.00",
        ("USD", "mrr"): "$5.00", ("USD", "arr"): "$60.00", ("USD", "revenue"): "$30.00", ("USD", "overdue"): "$22.00",
    }
    # revenue by plan: annual 1200.00, pro 4 x 30.00 - 10.00, basic 6 x 10.00 + 2.50 usage
    plans = re.findall(r'<div class="who">([^<]+)<small>[^<]*</small></div>\s*<svg[^>]*>.*?</svg>\s*'
                       r'<div class="amount">([^<]+)</div>', html.split('id="plans-EUR"')[1].split('id="revenue-EUR"')[0],
                       re.S)
    assert plans[:3] == [("annual", "€1,200.00"), ("pro", "€110.00"), ("basic", "€62.50")]
    # self-contained: no script, stylesheet link, image or remote reference
    assert not {"script", "link", "img", "iframe"} & set(report.tags)
    assert not re.search(r"""(src|href)\s*=|url\(|@import""", html)
    assert html.count("<svg") >= 2 + len(plans)
