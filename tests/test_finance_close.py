"""Finance marts after a real close: the session's ``billed`` warehouse (tests/conftest.py).

Its last close (the re-run as of 2026-12-01) runs the full close, finance refresh
included, so the marts, the reporting snapshot and the HTML report are those of a
real ``close()`` over a dbt-built ledger: nothing is rebuilt here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

from billhouse.finance_snapshot import load_snapshot
from billhouse.ledger_connection import ledger
from billhouse.report import render_report
from tests.conftest import Billed
from tests.test_finance import parse_report


def _ledger_invoices(billed: Billed) -> dict[str, dict[str, Any]]:
    with ledger(billed.settings) as conn:
        invoices = conn.execute(
            "SELECT number, currency, issuing_date, sub_total_cents, coupons_cents, taxes_cents,"
            " credit_notes_cents, prepaid_credits_cents, total_cents FROM invoices WHERE status = 'finalized'"
        ).fetchall()
        fees = conn.execute(
            "SELECT i.number, sum(f.amount_cents) FROM invoice_fees f JOIN invoices i ON i.id = f.invoice_id"
            " WHERE i.status = 'finalized' GROUP BY i.number"
        ).fetchall()
    fee_sums = dict(fees)
    names = ("currency", "issuing_date", "sub_total_cents", "coupons_cents", "taxes_cents", "credit_notes_cents",
             "prepaid_credits_cents", "total_cents")
    return {number: {**dict(zip(names, rest)), "fees_cents": fee_sums.get(number, 0)} for number, *rest in invoices}


def test_revenue_fee_lines_add_up_to_each_ledger_invoice(billed: Billed) -> None:
    invoices = _ledger_invoices(billed)
    assert len(invoices) >= 4  # two closes of three customers' periods
    rows = billed.query(
        "select invoice_number, currency, revenue_date, sum(gross_amount_cents) as gross,"
        " sum(coupons_amount_cents) as coupons, sum(net_revenue_cents) as net from billhouse.fct_revenue"
        " where line_type = 'fee' group by invoice_number, currency, revenue_date"
    )
    revenue = {row["invoice_number"]: row for row in rows}
    assert set(revenue) == set(invoices)  # every finalized invoice, once, and nothing else
    for number, invoice in invoices.items():
        line = revenue[number]
        assert (line["currency"], line["revenue_date"]) == (invoice["currency"], invoice["issuing_date"]), number
        assert line["gross"] == invoice["fees_cents"] == invoice["sub_total_cents"], number
        assert line["coupons"] == invoice["coupons_cents"], number
        # total = sub_total - coupons + taxes - credit notes - prepaid credits (docs/invoicing.md)
        assert line["net"] + invoice["taxes_cents"] - invoice["credit_notes_cents"] \
            - invoice["prepaid_credits_cents"] == invoice["total_cents"], number
    assert not billed.query("select 1 from billhouse.fct_revenue where line_type = 'credit_note'")  # none issued


def test_snapshot_of_the_close_agrees_with_the_marts_and_the_ledger(billed: Billed) -> None:
    snapshot = load_snapshot(billed.settings.data_dir)
    assert snapshot is not None
    assert snapshot["as_of"] == "2026-12-01T00:00:00Z"
    invoices = _ledger_invoices(billed)
    by_month: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for invoice in invoices.values():
        month = invoice["issuing_date"].replace(day=1).isoformat()
        by_month[(month, invoice["currency"])][0] += invoice["sub_total_cents"] - invoice["coupons_cents"]
        by_month[(month, invoice["currency"])][1] += 1
    assert {(r["month"], r["currency"]): [r["amount_cents"], r["invoices_count"]]
            for r in snapshot["gross_revenue"]} == dict(by_month)

    mrr = billed.query("select mrr_month, currency, sum(ending_mrr_cents) as ending from billhouse.fct_mrr"
                       " group by mrr_month, currency")
    assert {(r["month"], r["currency"]): r["amount_cents"] for r in snapshot["mrr"]} == {
        (r["mrr_month"].isoformat(), r["currency"]): r["ending"] for r in mrr
    }
    # starter 10.00 EUR and tokyo 9,800 JPY a month; the precise plan has no subscription price
    assert {(r["month"], r["currency"]): r["amount_cents"] for r in snapshot["mrr"]
            if r["month"] == "2026-11-01"} == {("2026-11-01", "EUR"): 1000, ("2026-11-01", "JPY"): 9800}
    aging = billed.query("select currency, sum(open_amount_cents) as open from billhouse.fct_receivables_aging"
                         " group by currency")
    assert {r["currency"]: sum(a["open_amount_cents"] for a in snapshot["aging"] if a["currency"] == r["currency"])
            for r in aging} == {r["currency"]: r["open"] for r in aging}
    assert {r["as_of_date"] for r in billed.query("select as_of_date from billhouse.fct_receivables_aging")} \
        <= {date(2026, 12, 1)}

    report = parse_report(render_report(snapshot))
    assert report.kpis[("JPY", "mrr")] == "¥9,800"
    assert report.kpis[("EUR", "mrr")] == "€10.00"
    eur_net = sum(cents for (_, currency), (cents, _) in by_month.items() if currency == "EUR")
    assert report.tables["revenue-EUR"][-1][-1] == f"€{eur_net // 100:,}.{eur_net % 100:02d}"


def test_usage_per_customer_metric_and_day_is_the_first_copy_of_each_event(billed: Billed) -> None:
    """fct_usage against a Python count and sum over the raw events, keeping each
    identity's first accepted copy (the resent a-call-1 and a-store-1 of conftest's
    SECOND_BATCH, the latter with gb=100, must not count)."""
    raw = billed.query(
        "select e.external_subscription_id as sub, e.transaction_id as tx, e.code as code,"
        " toString(toDate(e.timestamp, 'UTC')) as day, e.properties as properties, e.ingested_at as ingested_at,"
        " s.external_customer_id as customer"
        " from billhouse_raw.events e join billhouse_raw.subscriptions s"
        " on e.external_subscription_id = s.external_id"
    )
    first_copies: dict[tuple[str, str], dict] = {}
    for event in sorted(raw, key=lambda event: event["ingested_at"]):
        first_copies.setdefault((event["sub"], event["tx"]), event)
    fields = {metric.code: metric.field_name for metric in billed.catalog.billable_metrics}
    expected: dict[tuple[str, str, str], tuple[int, Decimal]] = {}
    for event in first_copies.values():
        key = (event["customer"], event["code"], event["day"])
        count, units = expected.get(key, (0, Decimal(0)))
        field = fields[event["code"]]
        value = Decimal(str(json.loads(event["properties"])[field])) if field else Decimal(1)
        expected[key] = (count + 1, units + value)

    rows = billed.query("select * from billhouse.fct_usage")
    got = {
        (row["external_customer_id"], row["billable_metric_code"], str(row["usage_date"])): (row["events_count"], row["units"])
        for row in rows
    }
    assert got == expected
    assert got[("cus_a", "storage_gb", "2026-10-10")] == (1, Decimal(2))
