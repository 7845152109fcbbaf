"""Dagster on the real engines: the Definitions load from the store, each timezone's
schedule requests the (date, timezone) partition of its local midnight, materializing a
close finalizes the expected invoices once, and a late event is billed once, as an
adjustment on the next invoice. One store and one ledger for the module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from psycopg.errors import CheckViolation
from dagster import DagsterExecutionStepExecutionError, DagsterInstance, Definitions, MultiPartitionKey, build_schedule_context, materialize

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.events import load_events
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from invoicing.ledger import list_invoices
from orchestration.definitions import build_definitions, close_window, schedule_name

CATALOG = {
    "billable_metrics": [{"code": "calls", "aggregation_type": "count_agg"}],
    "plans": [{"code": "starter", "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
               "charges": [{"billable_metric_code": "calls", "charge_model": "standard",
                            "properties": {"amount": "0.5"}}]}],
    "customers": [
        {"external_id": "cus_utc", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_kiri", "currency": "EUR", "timezone": "Pacific/Kiritimati"},
    ],
    "subscriptions": [
        {"external_id": "sub_utc", "external_customer_id": "cus_utc", "plan_code": "starter",
         "subscription_at": "2026-08-01T00:00:00Z"},
        {"external_id": "sub_kiri", "external_customer_id": "cus_kiri", "plan_code": "starter",
         "subscription_at": "2026-08-01T00:00:00+14:00"},
    ],
}


def _call(tx: str, sub: str, ts: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": "calls", "timestamp": ts,
            "properties": {}}


@dataclass
class Orchestrated:
    settings: Settings
    defs: Definitions

    def close(self, day: str, tz_name: str):
        return materialize(
            list(self.defs.assets),
            partition_key=MultiPartitionKey({"date": day, "timezone": tz_name}),
            resources=self.defs.resources,
            instance=DagsterInstance.ephemeral(),
        )

    def invoices(self, customer: str | None = None):
        with ledger(self.settings) as conn:
            return [i for i in list_invoices(conn) if customer is None or i.external_customer_id == customer]


@pytest.fixture(scope="module")
def orchestrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestrated]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("orchestration")))
    load_inputs(settings, parse_catalog(CATALOG), [
        _call("u1", "sub_utc", "2026-08-05T00:00:00Z"),
        _call("u2", "sub_utc", "2026-08-06T00:00:00Z"),
        _call("k1", "sub_kiri", "2026-08-05T00:00:00Z"),
    ])
    try:
        yield Orchestrated(settings, build_definitions(settings))
    finally:
        stop_ledger(settings)


def test_definitions_load_with_one_schedule_per_customer_timezone(orchestrated: Orchestrated) -> None:
    names = sorted(s.name for s in orchestrated.defs.schedules)
    assert names == ["close_Pacific_Kiritimati", "close_UTC"]
    keys = {key.to_user_string() for a in orchestrated.defs.assets for key in a.keys}
    assert {"fct_invoice_drafts", "int_billing_periods", "invoices"} <= keys


def test_close_window_is_the_local_day_between_its_midnights() -> None:
    since, as_of = close_window(date(2026, 10, 31), "Pacific/Kiritimati")
    assert as_of == datetime(2026, 10, 31, 10, tzinfo=timezone.utc)
    assert since == datetime(2026, 10, 30, 10, tzinfo=timezone.utc)
    # 2026-03-29 is 23 hours long in Paris, 2026-10-25 25 hours
    since, as_of = close_window(date(2026, 3, 29), "Europe/Paris")
    assert (as_of - since).total_seconds() == 23 * 3600
    since, as_of = close_window(date(2026, 10, 25), "Europe/Paris")
    assert (as_of - since).total_seconds() == 25 * 3600


@pytest.mark.parametrize(
    ("tz_name", "fires_at", "billing_date"),
    [
        ("UTC", datetime(2026, 11, 1, 0, 5, tzinfo=timezone.utc), "2026-10-31"),
        # 00:05 in Kiritimati is 10:05 UTC the day before
        ("Pacific/Kiritimati", datetime(2026, 10, 31, 10, 5, tzinfo=timezone.utc), "2026-10-31"),
    ],
)
def test_schedule_requests_the_partition_of_its_local_midnight(orchestrated: Orchestrated, tz_name, fires_at,
                                                               billing_date) -> None:
    [target] = [s for s in orchestrated.defs.schedules if s.name == schedule_name(tz_name)]
    assert target.execution_timezone == tz_name
    context = build_schedule_context(
        scheduled_execution_time=fires_at.astimezone(ZoneInfo(tz_name)),
        repository_def=orchestrated.defs.get_repository_def(),
    )
    [request] = list(target.evaluate_tick(context).run_requests)
    assert request.run_key == f"{tz_name}/{billing_date}"
    assert request.partition_key == MultiPartitionKey({"date": billing_date, "timezone": tz_name})


def test_materializing_a_close_invoices_once(orchestrated: Orchestrated) -> None:
    # 1. The UTC close of August 31 (invoices dated Sep 1): only the UTC customer's
    # August invoice (Kiritimati closes its August at its own midnight, another partition).
    assert orchestrated.close("2026-08-31", "UTC").success
    [august] = orchestrated.invoices()
    assert august.external_customer_id == "cus_utc"
    assert august.issuing_date == date(2026, 9, 1)
    assert august.total_cents == 1000 + 100  # 2 calls x 0.5 EUR
    # 2. Re-running it changes nothing.
    assert orchestrated.close("2026-08-31", "UTC").success
    assert [i.number for i in orchestrated.invoices()] == [august.number]
    # 3. Kiritimati's own close of its August 31.
    assert orchestrated.close("2026-08-31", "Pacific/Kiritimati").success
    [kiri] = orchestrated.invoices("cus_kiri")
    assert (kiri.issuing_date, kiri.total_cents) == (date(2026, 9, 1), 1000 + 50)


def test_a_late_event_is_billed_once_as_an_adjustment_on_the_next_invoice(orchestrated: Orchestrated) -> None:
    [august] = orchestrated.invoices("cus_utc")
    # A late August event arrives after August was invoiced ...
    with open_warehouse(orchestrated.settings) as warehouse:
        load_events(warehouse, [_call("u-late", "sub_utc", "2026-08-20T00:00:00Z")], parse_catalog(CATALOG))
    # ... and is billed on the next invoice (Oct 1) as an adjustment for August, once.
    assert orchestrated.close("2026-09-30", "UTC").success
    assert orchestrated.close("2026-09-30", "UTC").success
    assert orchestrated.close("2026-10-31", "UTC").success
    utc = sorted(orchestrated.invoices("cus_utc"), key=lambda i: i.issuing_date)
    assert [i.issuing_date for i in utc] == [date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)]
    adjustments = [(i.issuing_date, f) for i in utc for f in i.fees if f.kind == "adjustment"]
    assert len(adjustments) == 1
    issued, fee = adjustments[0]
    assert issued == date(2026, 10, 1)
    assert (fee.units, fee.amount_cents) == (1, 50)
    assert fee.period_start == datetime(2026, 8, 1, tzinfo=timezone.utc)
    assert utc[0].total_cents == 1100  # August's invoice never changes
    assert utc[1].total_cents == 1000 + 0 + 50
    assert utc[2].total_cents == 1000


def test_a_day_that_has_not_ended_cannot_be_closed(orchestrated: Orchestrated) -> None:
    from orchestration.definitions import DayNotOverError

    tomorrow = (datetime.now(timezone.utc).date()).isoformat()
    with pytest.raises((DayNotOverError, DagsterExecutionStepExecutionError)):
        orchestrated.close(tomorrow, "UTC")
