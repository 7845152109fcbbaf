"""Pay-in-advance (per-event) usage charges on the real engines, chDB and PostgreSQL.

Every model Lago bills per event — standard, graduated, package, percentage,
graduated_percentage — with filters and grouped_by: an event pays the charge's amount
over its bucket's peak units through it minus the amount over the peak before it, so no
fee is negative and a period's per-event fees add up to the arrears amount of the same
events when the units never fall (tests/test_negative_usage.py). One catalog, one full
dbt build per warehouse (every data and unit test), then the per-event models again in
three consecutive close windows; every expected amount is computed by hand in its row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import close_variables
from billhouse.dbt_runner import run_dbt
from billhouse.events import load_events
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import naive_utc, query_warehouse, relations_read_outside_lineage
from .reference import pay_in_advance as per_event_ref

AS_OF = datetime(2026, 12, 1, tzinfo=timezone.utc)
# three consecutive close windows covering everything billed by AS_OF
WINDOWS = (
    (None, datetime(2026, 10, 12, tzinfo=timezone.utc)),
    (datetime(2026, 10, 12, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc)),
    (datetime(2026, 11, 3, tzinfo=timezone.utc), AS_OF),
)
PER_EVENT_MODELS = ("int_pay_in_advance_periods", "int_pay_in_advance_events", "int_pay_in_advance_charge_fees")

GRADUATED = {"graduated_ranges": [
    {"from_value": 0, "to_value": 100, "per_unit_amount": "0.01", "flat_amount": "1"},
    {"from_value": 101, "to_value": 200, "per_unit_amount": "0.005", "flat_amount": "2"},
    {"from_value": 201, "to_value": None, "per_unit_amount": "0.001", "flat_amount": "0"},
]}
PACKAGE = {"amount": "5", "package_size": 100, "free_units": 10}
PERCENTAGE = {"rate": "2", "fixed_amount": "0.1", "free_units_per_total_aggregation": "50",
              "per_transaction_min_amount": "0.6", "per_transaction_max_amount": "3"}
GRADUATED_PERCENTAGE = {"graduated_percentage_ranges": [
    {"from_value": 0, "to_value": 100, "rate": "1", "flat_amount": "0.5"},
    {"from_value": 101, "to_value": None, "rate": "0.5", "flat_amount": "0"},
]}
VOLUME = {"volume_ranges": [
    {"from_value": 0, "to_value": 100, "per_unit_amount": "0.02", "flat_amount": "0"},
    {"from_value": 101, "to_value": None, "per_unit_amount": "0.015", "flat_amount": "1"},
]}


def _tiers(low: str, high: str) -> dict:
    return {"graduated_ranges": [
        {"from_value": 0, "to_value": 10, "per_unit_amount": low, "flat_amount": "0"},
        {"from_value": 11, "to_value": None, "per_unit_amount": high, "flat_amount": "0"},
    ]}


FILTERED = {
    "billable_metric_code": "units", "charge_model": "graduated", "pay_in_advance": True,
    "properties": _tiers("1", "0.5"),
    "filters": [
        {"values": {"region": ["eu"], "tier": ["gold"]}, "properties": _tiers("3", "1.5")},
        {"values": {"region": ["eu"]}, "properties": _tiers("2", "1")},
    ],
}
GROUPED = {"billable_metric_code": "units", "charge_model": "package", "pay_in_advance": True,
           "properties": {"amount": "1", "package_size": 10}, "grouped_by": ["workspace"]}


def _plan(code: str, charge: dict, interval: str = "monthly", **extra: Any) -> dict:
    return {"code": code, "interval": interval, "amount_cents": 0, "amount_currency": "EUR", "charges": [charge],
            **extra}


def _charge(metric: str, model: str, properties: dict) -> dict:
    return {"billable_metric_code": metric, "charge_model": model, "pay_in_advance": True, "properties": properties}


CASES = {  # subscription -> (plan, its one charge, customer timezone)
    "std": ("p_std", _charge("calls", "standard", {"amount": "0.005"}), "UTC"),
    "grad": ("p_grad", _charge("units", "graduated", GRADUATED), "UTC"),
    "grad_late": ("p_grad", _charge("units", "graduated", GRADUATED), "UTC"),
    "pkg": ("p_pkg", _charge("units", "package", PACKAGE), "UTC"),
    "pct": ("p_pct", _charge("units", "percentage", PERCENTAGE), "UTC"),
    "gpct": ("p_gpct", _charge("units", "graduated_percentage", GRADUATED_PERCENTAGE), "UTC"),
    "filtered": ("p_filtered", FILTERED, "UTC"),
    "grouped": ("p_grouped", GROUPED, "Europe/Paris"),
    "vol": ("p_vol", _charge("units", "volume", VOLUME), "UTC"),
    "neg": ("p_neg", _charge("units", "standard", {"amount": "1"}), "UTC"),
    "ceil": ("p_ceil", _charge("rounded", "standard", {"amount": "1"}), "UTC"),
}

# the billing clock of the charge period: (subscription, plan interval, plan extras, subscription extras)
CLOCKS = {
    "weekly": ("weekly", {}, {"subscription_at": "2026-10-01T00:00:00Z"}),
    "sliced": ("yearly", {"bill_charges_monthly": True},
               {"subscription_at": "2026-01-31T00:00:00Z", "billing_time": "anniversary"}),
    "terminated": ("quarterly", {}, {"subscription_at": "2026-08-31T00:00:00Z", "billing_time": "anniversary",
                                     "terminated_at": "2026-10-20T15:00:00Z"}),
}

CATALOG = {
    "billable_metrics": [
        {"code": "calls", "aggregation_type": "count_agg"},
        {"code": "units", "aggregation_type": "sum_agg", "field_name": "units"},
        {"code": "rounded", "aggregation_type": "sum_agg", "field_name": "units",
         "rounding_function": "ceil", "rounding_precision": 0},
    ],
    "plans": [
        *[_plan(plan, charge) for plan, charge in {p: c for p, c, _ in CASES.values()}.items()],
        *[_plan(f"p_{sub}", _charge("units", "graduated", GRADUATED), interval, **extra)
          for sub, (interval, extra, _) in CLOCKS.items()],
    ],
    "customers": [{"external_id": f"cus_{sub}", "currency": "EUR", "timezone": tz}
                  for sub, (_, _, tz) in CASES.items()],
    "subscriptions": [
        *[{"external_id": sub, "external_customer_id": f"cus_{sub}", "plan_code": plan,
           "subscription_at": "2026-10-01T00:00:00+02:00" if tz == "Europe/Paris" else "2026-10-01T00:00:00Z"}
          for sub, (plan, _, tz) in CASES.items()],
        *[{"external_id": sub, "external_customer_id": "cus_grad", "plan_code": f"p_{sub}", **extra}
          for sub, (_, _, extra) in CLOCKS.items()],
    ],
}
for _sub in CLOCKS:
    CASES[_sub] = (f"p_{_sub}", _charge("units", "graduated", GRADUATED), "UTC")


@dataclass(frozen=True)
class Fee:
    """One expected per-event fee, computed by hand."""

    subscription: str
    transaction_id: str
    event_at: str
    ingested_at: str
    properties: dict[str, Any]
    issuing_date: str
    units: str
    cents: int


def _on_time(sub: str, tx: str, hour: int, units: str | None, cents: int, units_billed: str | None = None,
             **extra: Any) -> Fee:
    """An event on October 5 (UTC), ingested at noon the same day: billed at October 6's midnight.
    ``units_billed``: the units the fee shows when they differ from the event's value."""
    properties = {"units": units, **extra} if units is not None else dict(extra)
    return Fee(sub, tx, f"2026-10-05T{hour:02d}:00:00Z", "2026-10-05T12:00:00Z", properties, "2026-10-06",
               units_billed or units or "1", cents)


FEES: list[Fee] = [
    # standard 0.005 per call: 0.005 -> 0.5 cent -> 1 cent per event (half-up), 3 cents
    # in all, where the arrears fee would round 0.015 once -> 2 cents (one minor unit
    # per event at most, as in Lago)
    _on_time("std", "s1", 1, None, 1),
    _on_time("std", "s2", 2, None, 1),
    _on_time("std", "s3", 3, None, 1),
    # graduated 0-100 @0.01 +1 | 101-200 @0.005 +2 | 201+ @0.001
    _on_time("grad", "g1", 1, "60", 160),  # first event: 1 + 60 x 0.01 = 1.60 (pays the first flat)
    # crosses 100: amount(120) - amount(60) = (1 + 1 + 2 + 20 x 0.005) - 1.6 = 4.1 - 1.6
    # = 40 x 0.01 + 2 + 20 x 0.005 = 2.50: both tiers' share and the second flat
    _on_time("grad", "g2", 2, "60", 250),
    _on_time("grad", "g3", 3, "100", 42),  # amount(220) = 4.5 + 20 x 0.001 = 4.52; - 4.1 = 0.42
    _on_time("grad", "g4", 4, "30", 3),  # amount(250) = 4.55; - 4.52 = 0.03
    # package: 5 per 100 units after 10 free units
    _on_time("pkg", "k1", 1, "5", 0),  # 5 units: all free -> 0 packages
    _on_time("pkg", "k2", 2, "10", 500),  # 15: 5 paid -> opens package 1: 5.00
    _on_time("pkg", "k3", 3, "50", 0),  # 65: 55 paid, still 1 package
    _on_time("pkg", "k4", 4, "50", 500),  # 115: 105 paid -> package 2
    _on_time("pkg", "k5", 5, "100", 500),  # 215: 205 paid -> package 3
    # percentage 2 % + 0.1 per paid event, the first 50 units free, each event clamped to [0.6, 3]
    _on_time("pct", "c1", 1, "30", 0),  # running 30 < 50: free
    _on_time("pct", "c2", 2, "40", 60),  # running 70 reaches 50: 20 paid -> 0.4 + 0.1 = 0.5 -> min 0.6
    _on_time("pct", "c3", 3, "10", 60),  # 0.2 + 0.1 = 0.3 -> min 0.6
    _on_time("pct", "c4", 4, "500", 300),  # 10 + 0.1 = 10.1 -> max 3
    _on_time("pct", "c5", 5, "5", 60),  # 0.1 + 0.1 = 0.2 -> min 0.6
    # graduated_percentage 0-100 at 1 % + 0.5 | 101+ at 0.5 %
    _on_time("gpct", "q1", 1, "80", 130),  # 0.5 + 0.8 = 1.30
    _on_time("gpct", "q2", 2, "40", 30),  # amount(120) = 0.5 + 1 + 20 x 0.005 = 1.6; - 1.3 = 0.30
    _on_time("gpct", "q3", 3, "1000", 500),  # amount(1120) = 1.5 + 1020 x 0.005 = 6.6; - 1.6 = 5.00
    # filtered graduated, 0-10 | 11+ per unit: eu+gold 3 | 1.5, eu 2 | 1, default 1 | 0.5;
    # every filter (and the default) accumulates its own units
    _on_time("filtered", "f1", 1, "8", 1600, region="eu"),  # eu: 8 x 2 = 16
    _on_time("filtered", "f2", 2, "8", 800, region="us"),  # default: 8 x 1 = 8
    _on_time("filtered", "f3", 3, "4", 600, region="eu"),  # eu: amount(12) = 20 + 2 x 1 = 22; - 16 = 6
    _on_time("filtered", "f4", 4, "4", 300, region="us"),  # default: amount(12) = 10 + 1 = 11; - 8 = 3
    _on_time("filtered", "f5", 5, "2", 100),  # no region -> default: amount(14) = 12; - 11 = 1
    _on_time("filtered", "f6", 6, "1", 300, region="eu", tier="gold"),  # first filter: 1 x 3 = 3
    _on_time("filtered", "f7", 7, "1", 50, region="us", tier="gold"),  # default: 12.5 - 12 = 0.5
    # standard 1 per unit with a negative value: the running total 3 -> -2 (priced as 0)
    # -> 2 -> 4; the priced units are the period's peak so far, 3 -> 3 -> 3 -> 4: an
    # event lowering the units pays 0 (never a negative fee), and later events pay only
    # above the peak (3 units are not billed twice): 3, 0, 0, 1
    _on_time("neg", "n1", 1, "3", 300),
    _on_time("neg", "n2", 2, "-5", 0, units_billed="0"),
    _on_time("neg", "n3", 3, "4", 0, units_billed="0"),
    _on_time("neg", "n4", 4, "2", 100, units_billed="1"),
    # rounding_function ceil on the running total: 0.2 -> 1, 0.4 -> 1, 1.1 -> 2 units
    _on_time("ceil", "r1", 1, "0.2", 100, units_billed="1"),
    _on_time("ceil", "r2", 2, "0.2", 0, units_billed="0"),
    _on_time("ceil", "r3", 3, "0.7", 100, units_billed="1"),
    # grouped package (Paris): 1 per 10 units, one running total per workspace
    Fee("grouped", "w1", "2026-10-05T08:00:00Z", "2026-10-05T12:00:00Z", {"units": "6", "workspace": "a"},
        "2026-10-06", "6", 100),  # a: 6 -> 1 package
    Fee("grouped", "w2", "2026-10-05T09:00:00Z", "2026-10-05T12:00:00Z", {"units": "6", "workspace": "b"},
        "2026-10-06", "6", 100),  # b: 6 -> 1 package
    Fee("grouped", "w3", "2026-10-05T10:00:00Z", "2026-10-05T12:00:00Z", {"units": "6", "workspace": "a"},
        "2026-10-06", "6", 100),  # a: 12 -> 2 packages
    Fee("grouped", "w4", "2026-10-05T11:00:00Z", "2026-10-05T12:00:00Z", {"units": "3", "workspace": "b"},
        "2026-10-06", "3", 0),  # b: 9 -> still 1 package
    # 22:30 UTC is 00:30 on October 6 in Paris: billed at Paris's October 7 midnight; a: 21 -> 3
    Fee("grouped", "w5", "2026-10-05T22:30:00Z", "2026-10-05T22:45:00Z", {"units": "9", "workspace": "a"},
        "2026-10-07", "9", 100),
    # late and out-of-order arrivals on the graduated plan (see test_late_events_...)
    Fee("grad_late", "x1", "2026-10-10T10:00:00Z", "2026-10-10T12:00:00Z", {"units": "90"},
        "2026-10-11", "90", 190),  # 1 + 0.9 = 1.90
    # happened before x1 but arrived after x1 was billed: comes after it;
    # amount(110) = 1 + 1 + 2 + 10 x 0.005 = 4.05; - 1.9 = 2.15
    Fee("grad_late", "x2", "2026-10-09T10:00:00Z", "2026-10-12T09:00:00Z", {"units": "20"},
        "2026-10-13", "20", 215),
    # October's last hour, arrived after October was invoiced: still October's cumulative units;
    # amount(210) = 4.5 + 10 x 0.001 = 4.51; - 4.05 = 0.46
    Fee("grad_late", "x3", "2026-10-31T23:00:00Z", "2026-11-02T08:00:00Z", {"units": "100"},
        "2026-11-03", "100", 46),
    # November starts from zero again: 1 + 50 x 0.01 = 1.50
    Fee("grad_late", "x4", "2026-11-10T10:00:00Z", "2026-11-10T12:00:00Z", {"units": "50"},
        "2026-11-11", "50", 150),
]


def _at(sub: str, tx: str, day: str, units: str, cents: int) -> Fee:
    """An event at 10:00 UTC on ``day``, ingested at noon: billed at the next midnight."""
    issued = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return Fee(sub, tx, f"{day}T10:00:00Z", f"{day}T12:00:00Z", {"units": units}, issued, units, cents)


# the charge period follows the billing clock (graduated as above; 150 units alone in a
# period: 1 + 1 + 2 + 50 x 0.005 = 4.25; in the same period as another 150: 4.60 - 4.25 = 0.35)
FEES += [
    _at("weekly", "wk1", "2026-10-04", "150", 425),  # Thursday Oct 1 - Monday Oct 5 (calendar weeks)
    _at("weekly", "wk2", "2026-10-06", "150", 425),  # the next week
    # yearly from Jan 31 billing charges monthly: slices Sep 30 - Oct 31 and Oct 31 - Nov 30
    _at("sliced", "sl1", "2026-10-30", "150", 425),
    _at("sliced", "sl2", "2026-10-31", "150", 425),
    _at("sliced", "sl3", "2026-11-29", "150", 35),  # same slice as sl2
    # quarterly from Aug 31, terminated Oct 20: the period ends after Oct 20
    _at("terminated", "tm1", "2026-10-15", "150", 425),
]
# after the termination day: in no period of the subscription, not billed
UNBILLED = [_at("terminated", "tm2", "2026-10-25", "150", 0)]

# resent copy of x1 with another value: the first copy wins, nothing is billed twice
RESENT = Fee("grad_late", "x1", "2026-10-10T10:00:00Z", "2026-10-20T00:00:00Z", {"units": "999"}, "", "0", 0)
# volume with pay_in_advance stays in arrears: 110 units x 0.015 + 1 = 2.65 on November 1's invoice
VOLUME_EVENTS = [
    _on_time("vol", "v1", 1, "50", 0),
    _on_time("vol", "v2", 2, "60", 0),
]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Run:
    """What one warehouse billed: the full close and the three windowed closes."""

    target: str
    fees: list[dict] = field(default_factory=list)  # int_pay_in_advance_charge_fees, one window
    arrears: dict[str, dict] = field(default_factory=dict)  # int_charge_fees_rated by bucket
    draft_fees: list[dict] = field(default_factory=list)  # fct_invoice_draft_fees
    window_fees: list[list[dict]] = field(default_factory=list)
    read_outside_lineage: set[tuple[str, str]] = field(default_factory=set)  # conftest's check

    def fee(self, transaction_id: str) -> dict:
        [row] = [r for r in self.fees if r["transaction_id"] == transaction_id]
        return row


def _load(settings: Settings) -> None:
    catalog = parse_catalog(CATALOG, source="tests/test_pay_in_advance_charges.py")
    batches: dict[str, list[dict]] = defaultdict(list)
    for fee in [*FEES, *VOLUME_EVENTS, *UNBILLED, RESENT]:
        code = CASES[fee.subscription][1]["billable_metric_code"]
        batches[fee.ingested_at].append({"transaction_id": fee.transaction_id, "external_subscription_id": fee.subscription,
                                         "code": code, "timestamp": fee.event_at, "properties": fee.properties})
    with open_warehouse(settings) as warehouse:
        warehouse.replace_catalog(catalog)
        for ingested_at in sorted(batches):
            load_events(warehouse, batches[ingested_at], catalog, ingested_at=_utc(ingested_at))


def _bill(target: str, data_dir: Path) -> Run:
    settings = Settings(data_dir=data_dir, warehouse_target=target)
    run = Run(target)
    try:
        _load(settings)
        run_dbt(settings, ["build"], close_variables(AS_OF))
        run.fees = query_warehouse(settings, "select * from billhouse.int_pay_in_advance_charge_fees")
        run.arrears = {r["fee_key"]: r for r in query_warehouse(settings, "select * from billhouse.int_charge_fees_rated")}
        run.draft_fees = query_warehouse(settings, "select * from billhouse.fct_invoice_draft_fees")
        for since, until in WINDOWS:
            run_dbt(settings, ["run", "--select", *PER_EVENT_MODELS], close_variables(until, since))
            run.window_fees.append(query_warehouse(settings, "select * from billhouse.int_pay_in_advance_charge_fees"))
        run.read_outside_lineage = relations_read_outside_lineage(settings)
        return run
    finally:
        if target == "postgres":
            stop_ledger(settings)  # the warehouse database lives in the embedded PostgreSQL


@pytest.fixture(scope="module")
def chdb_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _bill("chdb", Path(tmp_path_factory.mktemp("advance-chdb")))


@pytest.fixture(scope="module")
def postgres_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _bill("postgres", Path(tmp_path_factory.mktemp("advance-postgres")))


@pytest.fixture(params=["chdb", "postgres"])
def run(request: pytest.FixtureRequest) -> Iterator[Run]:
    yield request.getfixturevalue(f"{request.param}_run")


def test_every_relation_a_model_reads_is_upstream_of_it(run: Run) -> None:
    # dbt runs several nodes at a time; the per-event models read others at compile time
    assert run.read_outside_lineage == set()


@pytest.mark.parametrize("expected", FEES, ids=lambda f: f"{f.subscription}-{f.transaction_id}")
def test_each_event_pays_the_amount_its_units_add_to_its_bucket(run: Run, expected: Fee) -> None:
    fee = run.fee(expected.transaction_id)
    assert fee["external_subscription_id"] == expected.subscription
    assert fee["amount_cents"] == expected.cents
    assert fee["units"] == Decimal(expected.units)
    assert fee["issuing_date"] == date.fromisoformat(expected.issuing_date)
    assert fee["fee_key"] == f"{expected.subscription}/{fee['charge_id']}/event/{expected.transaction_id}"


def test_every_event_is_billed_once_and_volume_is_not_billed_per_event(run: Run) -> None:
    assert sorted(r["transaction_id"] for r in run.fees) == sorted(f.transaction_id for f in FEES)
    assert len({r["fee_key"] for r in run.fees}) == len(run.fees)


def test_fees_of_a_period_add_up_to_the_arrears_amount_of_its_events(run: Run) -> None:
    by_bucket: dict[str, list[dict]] = defaultdict(list)
    for fee in run.fees:
        by_bucket[fee["bucket_key"]].append(fee)
    models = set()
    for bucket, fees in by_bucket.items():
        arrears = run.arrears[bucket]  # the same key: period, charge, filter and group
        assert sum(f["precise_amount"] for f in fees) == arrears["precise_amount"], bucket
        assert sum(f["units"] for f in fees) == arrears["units"], bucket
        # each fee is rounded on its own: at most one minor unit per event from the arrears rounding
        assert abs(sum(f["amount_cents"] for f in fees) - arrears["amount_cents"]) <= len(fees)
        models.add(arrears["charge_model"])
    assert models == {"standard", "graduated", "package", "percentage", "graduated_percentage"}
    # 7 one-bucket charges + grad_late's two periods + 3 filters + 2 groups + 2 weeks + 2 slices + 1 quarter
    assert len(by_bucket) == 19


def test_per_event_rounding_differs_from_one_arrears_rounding_by_at_most_one_unit_per_event(run: Run) -> None:
    std = [f for f in run.fees if f["external_subscription_id"] == "std"]
    arrears = run.arrears[std[0]["bucket_key"]]
    # 3 x 0.005 = 0.015 exactly either way; 3 x 1 cent per event, 2 cents rounded once
    assert sum(f["precise_amount"] for f in std) == arrears["precise_amount"] == Decimal("0.015")
    assert (sum(f["amount_cents"] for f in std), arrears["amount_cents"]) == (3, 2)


def test_python_reference_gives_every_fee_in_billing_order(run: Run) -> None:
    charges = {sub: charge for sub, (_, charge, _) in CASES.items()}
    values = {f.transaction_id: Decimal(f.properties.get("units", "1")) for f in FEES}
    by_bucket: dict[str, list[dict]] = defaultdict(list)
    for fee in run.fees:
        by_bucket[fee["bucket_key"]].append(fee)
    for fees in by_bucket.values():
        fees.sort(key=lambda f: f["event_number"])
        subscription = fees[0]["external_subscription_id"]
        charge = charges[subscription]
        properties = charge["properties"]
        if fees[0]["filter_index"] >= 0:
            properties = charge["filters"][fees[0]["filter_index"]]["properties"]
        amount_of = per_event_ref.amount_of_events(charge["charge_model"], properties)
        if subscription == "ceil":  # the metric's rounding_function on the running total
            amount_of = per_event_ref.amount_of_events(charge["charge_model"], properties, rounding=ROUND_CEILING)
        expected = per_event_ref.per_event_amounts([values[f["transaction_id"]] for f in fees], amount_of)
        assert [f["precise_amount"] for f in fees] == expected, fees[0]["bucket_key"]


def test_filters_and_groups_each_keep_their_own_running_units(run: Run) -> None:
    assert {(run.fee(t)["filter_index"], run.fee(t)["group_key"]) for t in ("f1", "f3")} == {(1, "")}
    assert {run.fee(t)["filter_index"] for t in ("f2", "f4", "f5", "f7")} == {-1}
    assert run.fee("f6")["filter_index"] == 0
    assert {run.fee(t)["group_key"] for t in ("w1", "w3", "w5")} == {"workspace=a"}
    assert {run.fee(t)["group_key"] for t in ("w2", "w4")} == {"workspace=b"}
    # the filter's own display name is on the fee
    assert run.fee("f1")["invoice_display_name"] == "units (region: eu)"


def test_late_events_come_after_what_was_billed_and_keep_their_period(run: Run) -> None:
    x2, x3, x4 = run.fee("x2"), run.fee("x3"), run.fee("x4")
    # x2 happened before x1 but arrived after x1's close: it is the second event of October
    assert (run.fee("x1")["event_number"], x2["event_number"]) == (1, 2)
    # x3 arrived after October was invoiced and is priced on October's units, billed Nov 3
    assert x3["event_number"] == 3
    assert naive_utc(x3["charge_period_start"]) == datetime(2026, 10, 1)
    assert naive_utc(x3["charge_period_end"]) == datetime(2026, 11, 1)
    assert x4["event_number"] == 1 and naive_utc(x4["charge_period_start"]) == datetime(2026, 11, 1)
    # the resent copy of x1 (999 units) is ignored: x1 keeps its 90 units
    assert run.fee("x1")["units"] == Decimal(90)


def test_consecutive_close_windows_bill_each_fee_once_with_the_same_amount(run: Run) -> None:
    windowed = [row for rows in run.window_fees for row in rows]
    assert len({r["fee_key"] for r in windowed}) == len(windowed)

    def key(r: dict) -> tuple:
        return r["fee_key"], r["issuing_date"], r["units"], r["precise_amount"], r["amount_cents"]

    assert sorted(map(key, windowed)) == sorted(map(key, run.fees))
    # the first window (through Oct 12) bills the October 4-11 events; x2 and x3 come later
    assert {r["transaction_id"] for r in run.window_fees[1]} == {"x2", "x3", "tm1", "sl1", "sl2"}
    assert {r["transaction_id"] for r in run.window_fees[2]} == {"x4", "sl3"}


def test_invoice_drafts_carry_per_event_fees_and_no_arrears_fee_for_their_charges(run: Run) -> None:
    charge_fees = [f for f in run.draft_fees if f["fee_kind"] == "charge"]
    per_event_keys = {f["fee_key"] for f in run.fees}
    arrears = [f for f in charge_fees if f["fee_key"] not in per_event_keys]
    # only the volume charge is billed in arrears: October (110 units) and November (0)
    assert sorted((f["external_subscription_id"], str(f["issuing_date"]), f["amount_cents"]) for f in arrears) == [
        ("vol", "2026-11-01", 265), ("vol", "2026-12-01", 0)]
    assert {f["fee_key"] for f in charge_fees} - {f["fee_key"] for f in arrears} == per_event_keys
    filtered = [f for f in charge_fees if f["fee_key"] in per_event_keys and f["external_subscription_id"] == "filtered"]
    assert {(f["filter_index"]) for f in filtered} == {-1, 0, 1}


def test_both_warehouses_bill_identical_per_event_fees(chdb_run: Run, postgres_run: Run) -> None:
    columns = ("fee_key", "bucket_key", "issuing_date", "event_number", "units", "precise_amount", "amount_cents",
               "filter_index", "group_key", "invoice_display_name")

    def comparable(run: Run) -> list[tuple]:
        return sorted(tuple(r[c] for c in columns) for r in run.fees)

    assert comparable(chdb_run) == comparable(postgres_run)
    assert len(chdb_run.fees) == len(FEES)


# --- through the ledger: closes, a re-run and a late event (chDB) --------------------------

LEDGER_CATALOG = {
    "billable_metrics": [{"code": "units", "aggregation_type": "sum_agg", "field_name": "units"}],
    "plans": [{"code": "p_both", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR", "charges": [
        _charge("units", "graduated", GRADUATED),  # charge p_both/0: per event
        {"billable_metric_code": "units", "charge_model": "standard", "properties": {"amount": "0.01"}},  # arrears
    ]}],
    "customers": [{"external_id": "cus_both", "currency": "EUR", "timezone": "UTC"}],
    "subscriptions": [{"external_id": "both", "external_customer_id": "cus_both", "plan_code": "p_both",
                       "subscription_at": "2026-10-01T00:00:00Z"}],
}


def _unit_event(tx: str, at: str, units: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": "both", "code": "units", "timestamp": at,
            "properties": {"units": units}}


@dataclass
class Ledgered:
    october: Any  # CloseReport of (Oct 5, Nov 1]
    november: Any  # CloseReport of (Nov 1, Nov 6], after a late event arrived
    rerun: Any  # CloseReport of everything up to Nov 6 again
    rerun_drafts: list[dict]


@pytest.fixture(scope="module")
def ledgered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledgered]:
    from billhouse.close import close

    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("advance-ledger")))
    catalog = parse_catalog(LEDGER_CATALOG, source="tests/test_pay_in_advance_charges.py")
    nov_1, nov_6 = datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 6, tzinfo=timezone.utc)
    try:
        with open_warehouse(settings) as warehouse:
            warehouse.replace_catalog(catalog)
            load_events(warehouse, [_unit_event("a1", "2026-10-05T01:00:00Z", "60"),
                                    _unit_event("a2", "2026-10-05T02:00:00Z", "60")],
                        catalog, ingested_at=_utc("2026-10-05T12:00:00Z"))
            # happened before a1, arrived after a1 and a2 were billed
            load_events(warehouse, [_unit_event("a3", "2026-10-04T10:00:00Z", "100")],
                        catalog, ingested_at=_utc("2026-10-20T12:00:00Z"))
        october = close(settings, nov_1, since=datetime(2026, 10, 5, tzinfo=timezone.utc),
                        refresh_finance_marts=False)
        with open_warehouse(settings) as warehouse:
            # October's last hour, arrived after October's invoice
            load_events(warehouse, [_unit_event("a4", "2026-10-31T23:00:00Z", "30")],
                        catalog, ingested_at=_utc("2026-11-05T12:00:00Z"))
        # the data tests ran in the first close (and in the build of the other fixtures)
        november = close(settings, nov_6, since=nov_1, refresh_finance_marts=False, dbt_args=("run",))
        rerun = close(settings, nov_6, refresh_finance_marts=False, dbt_args=("run",))
        rerun_drafts = query_warehouse(settings, "select * from billhouse.fct_invoice_draft_fees")
        yield Ledgered(october, november, rerun, rerun_drafts)
    finally:
        stop_ledger(settings)


def test_closes_invoice_each_event_fee_once_and_a_rerun_changes_nothing(ledgered: Ledgered) -> None:
    issued = {(str(i.issuing_date), f.fee_key.split("/")[-1] if "/event/" in f.fee_key else f.kind, f.amount_cents)
              for i in [*ledgered.october.invoices, *ledgered.november.invoices] for f in i.fees}
    assert issued == {
        ("2026-10-06", "a1", 160),  # 1 + 60 x 0.01
        ("2026-10-06", "a2", 250),  # crosses 100: 4.10 - 1.60
        ("2026-10-21", "a3", 42),  # after a1 and a2 (billed first): 4.52 - 4.10
        ("2026-11-01", "subscription", 0),
        ("2026-11-01", "charge", 220),  # the arrears charge: 220 units x 0.01
        ("2026-11-06", "a4", 3),  # 4.55 - 4.52, October's units although October is invoiced
        # the arrears charge is re-rated for the late event: 250 x 0.01 - 2.20; the
        # per-event charge is not (a4 has its own fee)
        ("2026-11-06", "adjustment", 30),
    }
    keys = [f.fee_key for i in ledgered.rerun.invoices for f in i.fees]
    assert len(keys) == len(set(keys)) == 7
    assert ledgered.rerun.created == []
    # the re-run recomputes every per-event fee exactly as it was invoiced
    invoiced = {f.fee_key: f.amount_cents for i in ledgered.rerun.invoices for f in i.fees if "/event/" in f.fee_key}
    drafted = {f["fee_key"]: f["amount_cents"] for f in ledgered.rerun_drafts if "/event/" in f["fee_key"]}
    assert drafted == invoiced and len(invoiced) == 4
    [adjustment] = [f for _, f in ledgered.november.adjustments]
    assert adjustment.charge_id == "p_both/1"
