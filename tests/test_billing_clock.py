"""The billing clock on the real engines: period boundaries in the customer's timezone
for every interval and billing_time, and the subscription fee's proration, trials,
pay-in-advance, termination and plan changes. One catalog, one full dbt build (every
data and unit test, the `billing` selector) per warehouse — chDB and PostgreSQL run the
same table-driven cases; every expected value below is computed by hand in its row."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import close_variables, load_inputs
from billhouse.dbt_runner import run_dbt
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

AS_OF = datetime(2027, 1, 1, tzinfo=timezone.utc)


def _plan(code: str, interval: str, cents: int, **extra: object) -> dict:
    return {"code": code, "interval": interval, "amount_cents": cents, "amount_currency": "EUR",
            "charges": [], **extra}


def _sub(sid: str, customer: str, plan: str, at: str, billing_time: str = "calendar", **extra: object) -> dict:
    return {"external_id": sid, "external_customer_id": customer, "plan_code": plan, "subscription_at": at,
            "billing_time": billing_time, **extra}


INTERVALS = ("weekly", "monthly", "quarterly", "semiannual", "yearly")

CATALOG = {
    "billable_metrics": [{"code": "calls", "aggregation_type": "count_agg"}],
    "plans": [
        *[_plan(f"p_{i}", i, 1000) for i in INTERVALS],
        _plan("cent", "monthly", 100),
        _plan("cent_trial3", "monthly", 100, trial_period=3),
        _plan("thirty", "monthly", 3000),
        _plan("thirty_trial10", "monthly", 3000, trial_period=10),
        _plan("thirty_trial40", "monthly", 3000, trial_period=40),
        _plan("thirtyone", "monthly", 3100),
        _plan("thirtyone_advance", "monthly", 3100, pay_in_advance=True),
        _plan("premium", "monthly", 6000),
        _plan("yearly_monthly_charges", "yearly", 12000, bill_charges_monthly=True,
              charges=[{"billable_metric_code": "calls", "charge_model": "standard",
                        "properties": {"amount": "1"}}]),
    ],
    "customers": [
        {"external_id": "utc", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "paris", "currency": "EUR", "timezone": "Europe/Paris"},
        {"external_id": "nyc", "currency": "EUR", "timezone": "America/New_York"},
        {"external_id": "kiritimati", "currency": "EUR", "timezone": "Pacific/Kiritimati"},
        {"external_id": "pago", "currency": "EUR", "timezone": "Pacific/Pago_Pago"},
    ],
    "subscriptions": [
        # every interval x billing_time, started Tuesday 2026-02-10 (UTC)
        *[_sub(f"{i}_{bt}", "utc", f"p_{i}", "2026-02-10T12:00:00Z", bt)
          for i in INTERVALS for bt in ("calendar", "anniversary")],
        _sub("jan31", "utc", "p_monthly", "2026-01-31T08:00:00Z", "anniversary"),
        _sub("leap_monthly", "utc", "p_monthly", "2024-01-31T00:00:00Z", "anniversary"),
        _sub("leap_yearly", "utc", "p_yearly", "2024-02-29T00:00:00Z", "anniversary"),
        _sub("paris_monthly", "paris", "p_monthly", "2026-01-01T00:00:00+01:00"),
        _sub("paris_weekly", "paris", "p_weekly", "2026-03-16T00:00:00+01:00"),
        _sub("nyc_monthly", "nyc", "p_monthly", "2026-01-01T00:00:00-05:00"),
        _sub("kiri_monthly", "kiritimati", "p_monthly", "2026-05-01T00:00:00+14:00"),
        _sub("pago_monthly", "pago", "p_monthly", "2026-05-01T00:00:00-11:00"),
        # proration
        _sub("march15", "utc", "cent", "2026-03-15T10:00:00Z"),
        _sub("trial3", "utc", "cent_trial3", "2026-03-01T00:00:00Z"),
        _sub("april15", "utc", "thirty", "2026-04-15T00:00:00Z"),
        _sub("terminated", "utc", "thirtyone", "2026-01-01T00:00:00Z", terminated_at="2026-03-10T15:00:00Z"),
        _sub("basic_then", "utc", "thirty", "2026-01-01T00:00:00Z"),
        _sub("premium_now", "utc", "premium", "2026-06-16T09:00:00Z", previous_subscription_id="basic_then"),
        _sub("trial10", "utc", "thirty_trial10", "2026-04-01T00:00:00Z"),
        _sub("trial40", "utc", "thirty_trial40", "2026-04-01T00:00:00Z"),
        _sub("advance", "utc", "thirtyone_advance", "2026-03-15T10:00:00Z"),
        _sub("paris_march16", "paris", "cent", "2026-03-15T23:30:00Z"),
        _sub("yearly_charges", "utc", "yearly_monthly_charges", "2026-01-01T00:00:00Z"),
    ],
}


class Store:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def rows(self, sql: str) -> list[dict]:
        with open_warehouse(self.settings) as warehouse:
            return warehouse.query(sql)

    def periods(self, subscription: str) -> list[dict]:
        return self.rows(
            "select * from billhouse.int_subscription_periods"
            f" where external_subscription_id = '{subscription}' order by period_start"
        )

    def subscription_fees(self, subscription: str) -> list[dict]:
        return self.rows(
            "select * from billhouse.fct_invoice_draft_fees"
            f" where external_subscription_id = '{subscription}' and fee_kind = 'subscription'"
            " order by period_start"
        )


@pytest.fixture(scope="module", params=["chdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp(f"clock-{request.param}")),
                        warehouse_target=request.param)
    catalog = parse_catalog(CATALOG, source="tests/test_billing_clock.py")
    events = [
        {"transaction_id": f"c{m}", "external_subscription_id": "yearly_charges", "code": "calls",
         "timestamp": f"2026-{m:02d}-15T00:00:00Z", "properties": {}}
        for m in range(1, 13)
    ]
    try:
        load_inputs(settings, catalog, events)
        run_dbt(settings, ["build", "--selector", "billing"], close_variables(AS_OF))
        yield Store(settings)
    finally:
        if request.param == "postgres":
            stop_ledger(settings)  # the warehouse database lives in the embedded PostgreSQL


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# (subscription, first full period start, first full period end, first billed start) —
# all started Tuesday 2026-02-10; weeks start Monday.
FIRST_PERIODS = [
    ("weekly_calendar", "2026-02-09", "2026-02-16", "2026-02-10"),
    ("weekly_anniversary", "2026-02-10", "2026-02-17", "2026-02-10"),
    ("monthly_calendar", "2026-02-01", "2026-03-01", "2026-02-10"),
    ("monthly_anniversary", "2026-02-10", "2026-03-10", "2026-02-10"),
    ("quarterly_calendar", "2026-01-01", "2026-04-01", "2026-02-10"),
    ("quarterly_anniversary", "2026-02-10", "2026-05-10", "2026-02-10"),
    ("semiannual_calendar", "2026-01-01", "2026-07-01", "2026-02-10"),
    ("semiannual_anniversary", "2026-02-10", "2026-08-10", "2026-02-10"),
    ("yearly_calendar", "2026-01-01", "2027-01-01", "2026-02-10"),
    ("yearly_anniversary", "2026-02-10", "2027-02-10", "2026-02-10"),
]


@pytest.mark.parametrize(("subscription", "full_start", "full_end", "billed_start"), FIRST_PERIODS)
def test_first_period_of_every_interval_and_billing_time(store: Store, subscription, full_start, full_end,
                                                          billed_start) -> None:
    first = store.periods(subscription)[0]
    assert first["full_start_date"] == date.fromisoformat(full_start)
    assert first["full_end_date"] == date.fromisoformat(full_end)
    assert first["billed_start_date"] == date.fromisoformat(billed_start)
    assert _as_utc(first["period_start"]) == _utc(f"{billed_start}T00:00:00Z")


def test_second_periods_follow_without_gap(store: Store) -> None:
    for subscription, *_ in FIRST_PERIODS:
        periods = store.periods(subscription)
        for before, after in zip(periods, periods[1:]):
            assert before["period_end"] == after["period_start"], subscription
            assert before["full_end_date"] == after["full_start_date"], subscription


def test_jan_31_anniversary_clamps_to_month_end_then_returns_to_the_31st(store: Store) -> None:
    starts = [p["full_start_date"].isoformat() for p in store.periods("jan31")][:4]
    assert starts == ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]


def test_leap_year_feb_29(store: Store) -> None:
    monthly = [p["full_start_date"].isoformat() for p in store.periods("leap_monthly")][:3]
    assert monthly == ["2024-01-31", "2024-02-29", "2024-03-31"]
    yearly = [p["full_start_date"].isoformat() for p in store.periods("leap_yearly")]
    assert yearly[:3] == ["2024-02-29", "2025-02-28", "2026-02-28"]
    assert [p["period_days"] for p in store.periods("leap_yearly")][:2] == [365, 365]


# (subscription, local period start, UTC start, UTC end, hours): DST switches fall inside.
DST_PERIODS = [
    # Paris: CET (+1) until 2026-03-29, CEST (+2) until 2026-10-25
    ("paris_monthly", "2026-03-01", "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z", 31 * 24 - 1),
    ("paris_monthly", "2026-10-01", "2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z", 31 * 24 + 1),
    ("paris_weekly", "2026-03-23", "2026-03-22T23:00:00Z", "2026-03-29T22:00:00Z", 7 * 24 - 1),
    # New York: EST (-5) until 2026-03-08, EDT (-4) until 2026-11-01
    ("nyc_monthly", "2026-03-01", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", 31 * 24 - 1),
    ("nyc_monthly", "2026-11-01", "2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", 30 * 24 + 1),
]


@pytest.mark.parametrize(("subscription", "local_start", "utc_start", "utc_end", "hours"), DST_PERIODS)
def test_periods_across_dst_switches_stay_at_local_midnight(store: Store, subscription, local_start, utc_start,
                                                             utc_end, hours) -> None:
    [period] = [p for p in store.periods(subscription) if p["full_start_date"].isoformat() == local_start]
    assert _as_utc(period["period_start"]) == _utc(utc_start)
    assert _as_utc(period["period_end"]) == _utc(utc_end)
    assert (_utc(utc_end) - _utc(utc_start)).total_seconds() == hours * 3600


def test_kiritimati_and_pago_pago_close_may_on_different_utc_days(store: Store) -> None:
    # UTC+14 and UTC-11: local June 1 midnight is 2026-05-31T10:00Z in Kiritimati and
    # 2026-06-01T11:00Z in Pago Pago; both invoices are dated June 1 (local).
    [kiri] = [p for p in store.periods("kiri_monthly") if p["full_start_date"] == date(2026, 5, 1)]
    [pago] = [p for p in store.periods("pago_monthly") if p["full_start_date"] == date(2026, 5, 1)]
    assert _as_utc(kiri["period_end"]) == _utc("2026-05-31T10:00:00Z")
    assert _as_utc(pago["period_end"]) == _utc("2026-06-01T11:00:00Z")
    assert kiri["subscription_fee_issuing_date"] == pago["subscription_fee_issuing_date"] == date(2026, 6, 1)
    # at 2026-05-31T12:00Z, Kiritimati is already in June and Pago Pago still in May
    [kiri_june] = [p for p in store.periods("kiri_monthly") if p["full_start_date"] == date(2026, 6, 1)]
    assert _as_utc(kiri_june["period_start"]) <= _utc("2026-05-31T12:00:00Z") < _as_utc(pago["period_end"])


# (subscription, local period start, chargeable days, period days, amount cents, issuing date)
PRORATION = [
    # semantics.md: 100c plan started March 15 -> 17/31 x 100 = 54.84 -> 55c
    ("march15", "2026-03-15", 17, 31, 55, "2026-04-01"),
    # semantics.md: same plan, full March, 3-day trial -> 28/31 x 100 = 90.32 -> 90c
    ("trial3", "2026-03-01", 28, 31, 90, "2026-04-01"),
    # started on the 15th of a 30-day month: 16/30 x 3000 = 1600
    ("april15", "2026-04-15", 16, 30, 1600, "2026-05-01"),
    # terminated March 10 (15:00): March 1..10 billed in full, 10/31 x 3100 = 1000, issued March 11
    ("terminated", "2026-03-01", 10, 31, 1000, "2026-03-11"),
    # upgrade on June 16: the old plan bills June 1..15 (15/30 x 3000 = 1500) on June 16 ...
    ("basic_then", "2026-06-01", 15, 30, 1500, "2026-06-16"),
    # ... the new one June 16..30 (15/30 x 6000 = 3000) on July 1: 30 days, none twice
    ("premium_now", "2026-06-16", 15, 30, 3000, "2026-07-01"),
    # trial of 10 days from April 1 ends mid-period: April 11..30 = 20/30 x 3000 = 2000
    ("trial10", "2026-04-01", 20, 30, 2000, "2026-05-01"),
    # a 40-day trial from April 1 covers April (0) and May 1..10: May 11..31 = 21/31 x 3000 = 2032.26
    ("trial40", "2026-04-01", 0, 30, 0, "2026-05-01"),
    ("trial40", "2026-05-01", 21, 31, 2032, "2026-06-01"),
    # pay in advance, started March 15 10:00: 17/31 x 3100 = 1700, issued the next local midnight
    ("advance", "2026-03-15", 17, 31, 1700, "2026-03-16"),
    ("advance", "2026-04-01", 30, 30, 3100, "2026-04-01"),
    # Paris: 2026-03-15T23:30Z is March 16 00:30 local -> 16/31 x 100 = 51.61 -> 52c on April 1
    ("paris_march16", "2026-03-16", 16, 31, 52, "2026-04-01"),
]


@pytest.mark.parametrize(("subscription", "local_start", "chargeable", "days", "cents", "issued"), PRORATION)
def test_subscription_fee_proration(store: Store, subscription, local_start, chargeable, days, cents,
                                    issued) -> None:
    [period] = [p for p in store.periods(subscription) if p["billed_start_date"].isoformat() == local_start]
    assert (period["chargeable_days"], period["period_days"]) == (chargeable, days)
    [fee] = [f for f in store.subscription_fees(subscription)
             if _as_utc(f["period_start"]) == _as_utc(period["period_start"])]
    assert fee["amount_cents"] == cents
    assert fee["issuing_date"] == date.fromisoformat(issued)


def test_terminated_subscription_has_no_period_after_termination(store: Store) -> None:
    assert [p["billed_end_date"].isoformat() for p in store.periods("terminated")][-1] == "2026-03-11"
    assert [p["billed_end_date"].isoformat() for p in store.periods("basic_then")][-1] == "2026-06-16"


def test_yearly_plan_bills_charges_monthly_and_the_fee_yearly(store: Store) -> None:
    charges = store.rows(
        "select issuing_date, units, amount_cents from billhouse.fct_invoice_draft_fees"
        " where external_subscription_id = 'yearly_charges' and fee_kind = 'charge' order by issuing_date"
    )
    assert [c["issuing_date"] for c in charges] == [date(2026 + m // 12, m % 12 + 1, 1) for m in range(1, 13)]
    assert all(c["units"] == 1 and c["amount_cents"] == 100 for c in charges)
    [fee] = store.subscription_fees("yearly_charges")
    assert (fee["issuing_date"], fee["amount_cents"]) == (date(2027, 1, 1), 12000)


def test_one_invoice_per_customer_currency_and_issuing_date(store: Store) -> None:
    drafts = store.rows("select invoice_key, external_customer_id, issuing_date from billhouse.fct_invoice_drafts")
    keys = [(d["external_customer_id"], d["issuing_date"]) for d in drafts]
    assert len(keys) == len(set(keys))
    fees = store.rows("select count(*) as n, count(distinct fee_key) as u from billhouse.fct_invoice_draft_fees")
    assert fees[0]["n"] == fees[0]["u"]
