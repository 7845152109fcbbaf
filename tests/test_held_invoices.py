"""A fee no real invoice carries holds its invoice; every other invoice is issued.

A client sending nanoseconds or bytes where a metric counts seconds or gigabytes can
rate a fee past what a 64-bit count of minor units holds; that raised on both
warehouses and failed the close for every customer. A fee's amount is now clamped at
10^18 minor units (macro ``to_minor_units``), the invoice holding such a fee, or whose
fees add up to that much, is not issued (``fct_invoice_drafts.held_reason``) and the
close reports it (docs/operations.md, "Held invoices"). Hand-computed at 1 EUR per GB,
one close per warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import CloseReport, close, load_inputs
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from invoicing.ledger import FinalizedInvoice, list_invoices

# subscription -> (customer, GB of each event): the last fee below 10^18 cents, a fee at
# the bound, a nanosecond timestamp sent as gigabytes, two fees adding up past it, units
# past 10^26 (which PostgreSQL's numeric(38, 12) could not hold)
SUBSCRIPTIONS = {
    "below": ("cus_below", ["9999999999999999.99"]),
    "bound": ("cus_bound", ["10000000000000000"]),
    "absurd": ("cus_absurd", ["1732694400000000000"]),
    "half_1": ("cus_sum", ["6000000000000000"]),
    "half_2": ("cus_sum", ["6000000000000000"]),
    "units": ("cus_units", ["90000000000000000000000000"] * 3),
}

CATALOG = {
    "billable_metrics": [{"code": "gb", "aggregation_type": "sum_agg", "field_name": "gb"}],
    "plans": [{"code": "p", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
               "charges": [{"billable_metric_code": "gb", "charge_model": "standard",
                            "properties": {"amount": "1"}}]}],
    "customers": [{"external_id": customer, "currency": "EUR", "timezone": "UTC"}
                  for customer in sorted({customer for customer, _ in SUBSCRIPTIONS.values()})],
    "subscriptions": [{"external_id": name, "external_customer_id": customer, "plan_code": "p",
                       "subscription_at": "2026-10-01T00:00:00Z"} for name, (customer, _) in SUBSCRIPTIONS.items()],
}
EVENTS = [{"transaction_id": f"t_{name}_{n}", "external_subscription_id": name, "code": "gb",
           "timestamp": "2026-10-05T10:00:00Z", "properties": {"gb": gb}}
          for name, (_, gigabytes) in SUBSCRIPTIONS.items() for n, gb in enumerate(gigabytes)]


@dataclass(frozen=True)
class Closed:
    report: CloseReport
    ledger_invoices: list[FinalizedInvoice]


@pytest.fixture(scope="module", params=["chdb", "postgres"])
def closed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Closed]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp(f"held-{request.param}")),
                        warehouse_target=request.param)
    try:
        load_inputs(settings, parse_catalog(CATALOG, source="held.yml"), EVENTS)
        report = close(settings, datetime(2026, 11, 1, tzinfo=timezone.utc), refresh_finance_marts=False)
        with ledger(settings) as conn:
            yield Closed(report, list_invoices(conn))
    finally:
        stop_ledger(settings)


def test_the_close_issues_every_invoice_but_those_out_of_range(closed: Closed) -> None:
    issued = {invoice.external_customer_id: invoice.total_cents for invoice in closed.ledger_invoices}
    assert issued == {"cus_below": 999_999_999_999_999_999}


def test_the_close_reports_each_held_invoice_and_why(closed: Closed) -> None:
    fee = "fee 'gb' amounts to 1000000000000000000 minor units or more"
    assert {draft.invoice_key: draft.held_reason for draft in closed.report.held} == {
        "cus_bound/EUR/2026-11-01": fee,
        "cus_absurd/EUR/2026-11-01": fee,
        "cus_units/EUR/2026-11-01": fee,
        "cus_sum/EUR/2026-11-01": "its fees add up to 1000000000000000000 minor units or more",
    }
