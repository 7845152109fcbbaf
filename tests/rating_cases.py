"""Hand-computed rating cases, one subscription each, all billed in one simulate run.

Each case: a plan with one charge on the `units` metric (sum_agg of `properties.units`),
events giving the stated units in November 2026, and the amount in cents worked out by
hand in the comment. ``scenario()`` assembles them into one scenario document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    charge_model: str
    properties: dict[str, Any]
    values: tuple[str, ...]  # one event per value, an hour apart, in this order
    expected_cents: int
    min_amount_cents: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


GRADUATED = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.01", "flat_amount": "1"},
        {"from_value": 101, "to_value": 200, "per_unit_amount": "0.005", "flat_amount": "2"},
        {"from_value": 201, "to_value": None, "per_unit_amount": "0.001", "flat_amount": "0"},
    ]
}
GRADUATED_ADJACENT = {
    "graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.01", "flat_amount": "1"},
        {"from_value": 100, "to_value": 200, "per_unit_amount": "0.005", "flat_amount": "2"},
        {"from_value": 200, "to_value": None, "per_unit_amount": "0.001", "flat_amount": "0"},
    ]
}
VOLUME = {
    "volume_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "0.02", "flat_amount": "0"},
        {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.015", "flat_amount": "1"},
        {"from_value": 1001, "to_value": None, "per_unit_amount": "0.01", "flat_amount": "5"},
    ]
}
GRADUATED_PERCENTAGE = {
    "graduated_percentage_ranges": [
        {"from_value": 0, "to_value": 100, "rate": "1", "flat_amount": "0.5"},
        {"from_value": 101, "to_value": None, "rate": "0.5", "flat_amount": "0"},
    ]
}
PACKAGE = {"amount": "5", "package_size": 100, "free_units": 10}

CASES: list[Case] = [
    # standard: units x amount
    Case("std_zero", "standard", {"amount": "0.5"}, (), 0),
    Case("std_whole", "standard", {"amount": "0.5"}, ("3",), 150),  # 1.5
    Case("std_fraction", "standard", {"amount": "0.5"}, ("2.5",), 125),  # 1.25
    Case("std_tiny", "standard", {"amount": "0.5"}, ("0.001",), 0),  # 0.0005 -> 0
    Case("std_huge", "standard", {"amount": "0.5"}, ("1000000",), 50_000_000),  # 500 000
    Case("std_half_cent", "standard", {"amount": "0.015"}, ("1",), 2),  # 0.015 -> 2 (half-up)
    # 10^12 units x 1000 = 10^15 EUR: past Decimal128 range for the product (must not
    # overflow); 10^18 minor units or more would hold the invoice (test_held_invoices)
    Case("std_enormous", "standard", {"amount": "1000"}, ("1000000000000",), 10**17),
    # graduated: 0-100 @0.01 +1 | 101-200 @0.005 +2 | 201+ @0.001
    Case("grad_zero", "graduated", GRADUATED, (), 100),  # first flat even at 0
    Case("grad_at_to_value", "graduated", GRADUATED, ("100",), 200),  # 1 + 1
    Case("grad_one_past", "graduated", GRADUATED, ("101",), 401),  # 2 + 0.005 + 2 = 4.005
    Case("grad_fraction_past", "graduated", GRADUATED, ("100.5",), 400),  # 2 + 0.0025 + 2 = 4.0025
    Case("grad_three_tiers", "graduated", GRADUATED, ("200", "50"), 455),  # 2 + 0.5 + 2 + 0.05
    Case("grad_second_to", "graduated", GRADUATED, ("200",), 450),  # 2 + 0.5 + 2
    Case("grad_adjacent", "graduated", GRADUATED_ADJACENT, ("250",), 455),  # same split
    # volume: 0-100 @0.02 | 101-1000 @0.015 +1 | 1001+ @0.01 +5
    Case("vol_zero", "volume", VOLUME, (), 0),  # nothing at zero units (Lago)
    Case("vol_at_to_value", "volume", VOLUME, ("100",), 200),  # 100 x 0.02
    Case("vol_one_past", "volume", VOLUME, ("101",), 252),  # 1.515 + 1 = 2.515
    Case("vol_fraction", "volume", VOLUME, ("100.5",), 251),  # 1.5075 + 1 = 2.5075
    Case("vol_second_to", "volume", VOLUME, ("1000",), 1600),  # 15 + 1
    Case("vol_top", "volume", VOLUME, ("1001",), 1501),  # 10.01 + 5
    # package: 5 EUR per 100 units after 10 free units, packages rounded up
    Case("pkg_zero", "package", PACKAGE, (), 0),
    Case("pkg_all_free", "package", PACKAGE, ("10",), 0),
    Case("pkg_one_paid", "package", PACKAGE, ("11",), 500),
    Case("pkg_full_package", "package", PACKAGE, ("110",), 500),
    Case("pkg_one_past", "package", PACKAGE, ("111",), 1000),
    Case("pkg_fraction", "package", PACKAGE, ("10.5",), 500),
    Case("pkg_no_free", "package", {"amount": "2.5", "package_size": 3}, ("7",), 750),  # 3 x 2.5
    # percentage: rate % of each event's value, in time order
    Case("pct_zero", "percentage", {"rate": "2.5"}, (), 0),
    Case("pct_plain", "percentage", {"rate": "2.5"}, ("100", "200"), 750),  # 2.5 + 5
    Case("pct_fixed", "percentage", {"rate": "2.5", "fixed_amount": "0.1"}, ("100", "200"), 770),
    Case("pct_free_events", "percentage", {"rate": "2.5", "free_units_per_events": 1}, ("100", "200"), 500),
    Case("pct_free_amount", "percentage", {"rate": "2.5", "free_units_per_total_aggregation": "150"},
         ("100", "200"), 375),  # 100 free, then 150 of 200 paid: 3.75
    Case("pct_both_limits", "percentage",
         {"rate": "2.5", "free_units_per_events": 1, "free_units_per_total_aggregation": "50"},
         ("100", "200"), 625),  # 50 of 100 paid (1.25) + 200 (5)
    Case("pct_min_max", "percentage",
         {"rate": "2.5", "per_transaction_min_amount": "1", "per_transaction_max_amount": "4"},
         ("10", "100", "1000"), 750),  # 0.25 -> 1, 2.5, 25 -> 4
    Case("pct_fraction", "percentage", {"rate": "10"}, ("0.1", "0.2"), 3),  # 0.03
    # graduated_percentage: 0-100 at 1 % + 0.5 | 101+ at 0.5 %
    Case("gpct_zero", "graduated_percentage", GRADUATED_PERCENTAGE, (), 50),
    Case("gpct_at_to_value", "graduated_percentage", GRADUATED_PERCENTAGE, ("100",), 150),  # 1 + 0.5
    Case("gpct_one_past", "graduated_percentage", GRADUATED_PERCENTAGE, ("101",), 151),  # 1.505
    Case("gpct_high", "graduated_percentage", GRADUATED_PERCENTAGE, ("1000",), 600),  # 1.5 + 4.5
    Case("gpct_fraction", "graduated_percentage", GRADUATED_PERCENTAGE, ("50.5",), 101),  # 0.505 + 0.5
    # charge minimum: 200 cents used, 1000 minimum -> true-up of 800
    Case("min_true_up", "standard", {"amount": "0.01"}, ("200",), 1000, min_amount_cents=1000),
    Case("min_exceeded", "standard", {"amount": "0.01"}, ("2000",), 2000, min_amount_cents=1000),
]


def scenario() -> dict[str, Any]:
    document: dict[str, Any] = {
        "as_of": "2026-12-01T00:00:00Z",
        "billable_metrics": [
            {"code": "units", "name": "Units", "aggregation_type": "sum_agg", "field_name": "units"},
        ],
        "plans": [],
        "customers": [],
        "subscriptions": [],
        "events": [],
    }
    for case in CASES:
        document["plans"].append(
            {
                "code": f"plan_{case.name}",
                "name": case.name,
                "interval": "monthly",
                "amount_cents": 0,
                "amount_currency": "EUR",
                "charges": [
                    {
                        "billable_metric_code": "units",
                        "charge_model": case.charge_model,
                        "min_amount_cents": case.min_amount_cents,
                        "properties": case.properties,
                    }
                ],
            }
        )
        document["customers"].append({"external_id": f"cus_{case.name}", "currency": "EUR"})
        document["subscriptions"].append(
            {
                "external_id": f"sub_{case.name}",
                "external_customer_id": f"cus_{case.name}",
                "plan_code": f"plan_{case.name}",
                "subscription_at": "2026-11-01T00:00:00Z",
            }
        )
        for hour, value in enumerate(case.values):
            document["events"].append(
                {
                    "transaction_id": f"{case.name}-{hour}",
                    "external_subscription_id": f"sub_{case.name}",
                    "code": "units",
                    "timestamp": f"2026-11-10T{hour:02d}:00:00Z",
                    "properties": {"units": value},
                }
            )
    return document
