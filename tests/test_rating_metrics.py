"""Every aggregation, rounding, charge filters and grouped_by, on hand-computed cases,
through ``billhouse simulate`` on the real engines (one scenario, one build)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billhouse.simulate import Scenario, invoices_as_json, simulate
from billhouse.catalog import parse_instant

OCT = "2026-10-01T00:00:00Z"
NOV = "2026-11-01T00:00:00Z"


def metric(code: str, aggregation: str, field: str | None = None, **extra: Any) -> dict:
    return {"code": code, "name": code, "aggregation_type": aggregation, "field_name": field, **extra}


def plan(code: str, metric_code: str, amount: str = "1", **charge: Any) -> dict:
    return {
        "code": code, "name": code, "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
        "charges": [{"billable_metric_code": metric_code, "charge_model": "standard",
                     "properties": {"amount": amount}, **charge}],
    }


def events(sub: str, code: str, *rows: tuple[str, dict]) -> list[dict]:
    return [
        {"transaction_id": f"{sub}-{i}", "external_subscription_id": sub, "code": code,
         "timestamp": ts, "properties": props}
        for i, (ts, props) in enumerate(rows)
    ]


METRICS = [
    metric("calls", "count_agg"),
    metric("peak", "max_agg", "v"),
    metric("users", "unique_count_agg", "user"),
    metric("seats", "unique_count_agg", "seat", recurring=True),
    metric("level", "latest_agg", "v"),
    metric("gb", "weighted_sum_agg", "gb"),
    metric("gb_kept", "weighted_sum_agg", "gb", recurring=True),
    metric("storage", "sum_agg", "gb", recurring=True),
    metric("gb_hours", "custom_agg", expression="properties.gb * properties.hours"),
    metric("ceil_units", "sum_agg", "v", rounding_function="ceil", rounding_precision=0),
    metric("round_units", "sum_agg", "v", rounding_function="round", rounding_precision=1),
    metric("floor_tens", "sum_agg", "v", rounding_function="floor", rounding_precision=-1),
    metric("requests", "count_agg"),
    metric("api", "count_agg"),
    metric("exact", "sum_agg", "q"),
]

PLANS = [
    plan("p_calls", "calls"),
    plan("p_peak", "peak"),
    plan("p_users", "users"),
    plan("p_seats", "seats"),
    plan("p_level", "level"),
    plan("p_gb", "gb", "0.1"),
    plan("p_gb_kept", "gb_kept"),
    plan("p_storage", "storage"),
    plan("p_gb_hours", "gb_hours", "0.1"),
    plan("p_ceil", "ceil_units"),
    plan("p_round", "round_units", "10"),
    plan("p_floor", "floor_tens"),
    plan(
        "p_filters", "requests", "0.01",
        filters=[
            {"invoice_display_name": "EU requests", "values": {"region": ["eu"]}, "properties": {"amount": "0.02"}},
            {"values": {"region": ["us", "ca"], "tier": ["gold"]}, "properties": {"amount": "0.05"}},
        ],
    ),
    plan("p_groups", "api", "0.5", grouped_by=["region"]),
    plan("p_groups_idle", "api", "0.5", grouped_by=["region"]),
    plan(
        "p_exact", "exact", "1",
        filters=[{"invoice_display_name": "quoted", "values": {"tag": ['say "hi"']}, "properties": {"amount": "2"}}],
    ),
]

SUBSCRIPTIONS = {  # subscription -> (plan, start)
    "calls": ("p_calls", NOV), "peak": ("p_peak", NOV), "users": ("p_users", NOV),
    "seats": ("p_seats", OCT), "level": ("p_level", NOV), "gb": ("p_gb", NOV),
    "gb_kept": ("p_gb_kept", OCT), "storage": ("p_storage", OCT), "gb_hours": ("p_gb_hours", NOV),
    "ceil": ("p_ceil", NOV), "round": ("p_round", NOV), "floor": ("p_floor", NOV),
    "filters": ("p_filters", NOV), "groups": ("p_groups", NOV), "groups_idle": ("p_groups_idle", NOV),
    "exact": ("p_exact", NOV),
}

EVENTS = [
    *events("calls", "calls", ("2026-11-02T00:00:00Z", {}), ("2026-11-03T00:00:00Z", {}), ("2026-11-04T00:00:00Z", {})),
    {"transaction_id": "calls-0", "external_subscription_id": "calls", "code": "calls",
     "timestamp": "2026-11-02T00:00:00Z", "properties": {}},  # resent: counted once
    *events("peak", "peak", ("2026-11-02T00:00:00Z", {"v": 5}), ("2026-11-03T00:00:00Z", {"v": "12.5"}),
            ("2026-11-04T00:00:00Z", {"v": 7})),
    *events("users", "users", ("2026-11-02T00:00:00Z", {"user": "u1"}), ("2026-11-03T00:00:00Z", {"user": "u2"}),
            ("2026-11-04T00:00:00Z", {"user": "u1"}),
            ("2026-11-05T00:00:00Z", {"user": "u2", "operation_type": "remove"})),
    *events("seats", "seats",
            ("2026-10-02T00:00:00Z", {"seat": "s1"}), ("2026-10-03T00:00:00Z", {"seat": "s2"}),
            ("2026-10-04T00:00:00Z", {"seat": "s3"}),
            ("2026-10-20T00:00:00Z", {"seat": "s1", "operation_type": "remove"}),
            ("2026-11-05T00:00:00Z", {"seat": "s2", "operation_type": "remove"})),
    # the latest by timestamp wins, whatever the order of arrival
    *events("level", "level", ("2026-11-20T00:00:00Z", {"v": 3}), ("2026-11-02T00:00:00Z", {"v": 5}),
            ("2026-11-10T00:00:00Z", {"v": 9})),
    *events("gb", "gb", ("2026-11-01T00:00:00Z", {"gb": 10}), ("2026-11-16T00:00:00Z", {"gb": 20})),
    *events("gb_kept", "gb_kept", ("2026-10-01T00:00:00Z", {"gb": 10}), ("2026-11-16T00:00:00Z", {"gb": -10})),
    *events("storage", "storage", ("2026-10-05T00:00:00Z", {"gb": 5}), ("2026-11-05T00:00:00Z", {"gb": 3})),
    *events("gb_hours", "gb_hours", ("2026-11-02T00:00:00Z", {"gb": 2, "hours": 3}),
            ("2026-11-03T00:00:00Z", {"gb": "1.5", "hours": 2})),
    *events("ceil", "ceil_units", ("2026-11-02T00:00:00Z", {"v": "1.2"}), ("2026-11-03T00:00:00Z", {"v": "0.3"})),
    *events("round", "round_units", ("2026-11-02T00:00:00Z", {"v": "1.25"})),
    *events("floor", "floor_tens", ("2026-11-02T00:00:00Z", {"v": 27})),
    *events("filters", "requests",
            ("2026-11-02T00:00:00Z", {"region": "eu"}), ("2026-11-02T01:00:00Z", {"region": "eu"}),
            ("2026-11-02T02:00:00Z", {"region": "eu"}),
            ("2026-11-02T03:00:00Z", {"region": "eu", "tier": "gold"}),  # the first matching filter wins
            ("2026-11-02T04:00:00Z", {"region": "us", "tier": "gold"}),
            ("2026-11-02T05:00:00Z", {"region": "us", "tier": "gold"}),
            ("2026-11-02T06:00:00Z", {"region": "ca", "tier": "gold"}),
            ("2026-11-02T07:00:00Z", {"region": "us", "tier": "silver"}),  # no filter: default
            ("2026-11-02T08:00:00Z", {})),
    *events("groups", "api", ("2026-11-02T00:00:00Z", {"region": "eu"}), ("2026-11-03T00:00:00Z", {"region": "eu"}),
            ("2026-11-04T00:00:00Z", {"region": "us"}), ("2026-11-05T00:00:00Z", {})),
    # more digits than a double holds (a JSON number arrives as Decimal: ingestion's
    # float_hook), a numeric string with spaces, and a string that JSON escapes
    *events("exact", "exact", ("2026-11-02T00:00:00Z", {"q": Decimal("123456789012.123456789012")}),
            ("2026-11-03T00:00:00Z", {"q": "0.000000000001"}), ("2026-11-03T12:00:00Z", {"q": " 2 "}),
            ("2026-11-04T00:00:00Z", {"q": "1.5", "tag": 'say "hi"'})),
]


@pytest.fixture(scope="module")
def fees() -> dict[tuple[str, str], list[dict]]:
    document = {
        "as_of": "2026-12-01T00:00:00Z",
        "billable_metrics": METRICS,
        "plans": PLANS,
        "customers": [{"external_id": f"cus_{s}", "currency": "EUR"} for s in SUBSCRIPTIONS],
        "subscriptions": [
            {"external_id": s, "external_customer_id": f"cus_{s}", "plan_code": p, "subscription_at": start}
            for s, (p, start) in SUBSCRIPTIONS.items()
        ],
    }
    invoices = invoices_as_json(
        simulate(Scenario("tests/test_rating_metrics.py", parse_instant(document["as_of"]), document, EVENTS))
    )["invoices"]
    by_subscription: dict[tuple[str, str], list[dict]] = {}
    for invoice in invoices:
        for fee in invoice["fees"]:
            if fee["kind"] == "charge":
                by_subscription.setdefault((fee["external_subscription_id"], invoice["issuing_date"]), []).append(fee)
    return by_subscription


def units_and_cents(fees: dict, subscription: str, issued: str = "2026-12-01") -> tuple[Decimal, int]:
    [fee] = fees[(subscription, issued)]
    return Decimal(fee["units"]), fee["amount_cents"]


@pytest.mark.parametrize(
    ("subscription", "issued", "units", "cents"),
    [
        ("calls", "2026-12-01", "3", 300),  # 3 events, one resent, x 1
        ("peak", "2026-12-01", "12.5", 1250),  # max of 5, 12.5, 7
        ("users", "2026-12-01", "2", 200),  # u1, u2 added (a removal does not uncount)
        ("seats", "2026-11-01", "3", 300),  # s1, s2, s3 added in October
        ("seats", "2026-12-01", "2", 200),  # s2 (active at start, removed Nov 5) and s3
        ("level", "2026-12-01", "3", 300),  # the value at Nov 20, the latest
        ("gb", "2026-12-01", "20", 200),  # (10 x 30 d + 20 x 15 d) / 30 d = 20, x 0.1
        ("gb_kept", "2026-11-01", "10", 1000),  # 10 GB all October
        ("gb_kept", "2026-12-01", "5", 500),  # 10 carried over, -10 for the last 15 of 30 days
        ("storage", "2026-11-01", "5", 500),  # recurring sum: 5
        ("storage", "2026-12-01", "8", 800),  # 5 carried over + 3
        ("gb_hours", "2026-12-01", "9", 90),  # 2 x 3 + 1.5 x 2 = 9, x 0.1
        ("ceil", "2026-12-01", "2", 200),  # ceil(1.5)
        ("round", "2026-12-01", "1.3", 1300),  # round(1.25, 1) half-up = 1.3, x 10
        ("floor", "2026-12-01", "20", 2000),  # floor(27, -1)
    ],
)
def test_aggregation_units_and_amount(fees, subscription: str, issued: str, units: str, cents: int) -> None:
    assert units_and_cents(fees, subscription, issued) == (Decimal(units), cents)


def test_each_filter_is_its_own_fee_and_unmatched_events_use_the_default(fees) -> None:
    by_name = {(fee["invoice_display_name"], fee["units"], fee["amount_cents"]) for fee in fees[("filters", "2026-12-01")]}
    assert by_name == {
        ("EU requests", "4", 8),  # 4 x 0.02
        ("requests (region: us/ca, tier: gold)", "3", 15),  # 3 x 0.05
        ("requests", "2", 2),  # default: 2 x 0.01
    }
    [eu] = [f for f in fees[("filters", "2026-12-01")] if f["invoice_display_name"] == "EU requests"]
    assert eu["filter"] == {"region": ["eu"]}


def test_grouped_by_gives_one_fee_per_group(fees) -> None:
    groups = {(fee["group"]["region"], fee["units"], fee["amount_cents"]) for fee in fees[("groups", "2026-12-01")]}
    assert groups == {("eu", "2", 100), ("us", "1", 50), ("", "1", 50)}
    [idle] = fees[("groups_idle", "2026-12-01")]
    assert (idle["group"], idle["units"], idle["amount_cents"]) == (None, "0", 0)


def test_values_are_read_as_written_whatever_their_digits_or_escapes(fees) -> None:
    by_name = {(fee["invoice_display_name"], fee["units"], fee["amount_cents"]) for fee in fees[("exact", "2026-12-01")]}
    assert by_name == {
        # no digit lost to a double; spaces around a numeric string are ignored
        ("exact", "123456789014.123456789013", 12_345_678_901_412),
        ("quoted", "1.5", 300),  # the filter value 'say "hi"' matches the escaped string
    }
