"""Hand-computed cases and properties for the reference charge models and aggregations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:  # works whether or not tests/ is itself a package
    from tests.reference import aggregations as agg
    from tests.reference import charge_models as cm
except ImportError:  # pragma: no cover
    from reference import aggregations as agg  # type: ignore[no-redef]
    from reference import charge_models as cm  # type: ignore[no-redef]

D = Decimal


def rng(frm, to, price="0", flat="0", key="per_unit_amount"):
    return {"from_value": frm, "to_value": to, key: price, "flat_amount": flat}


# ----------------------------------------------------------------------- standard
@pytest.mark.parametrize(
    ("units", "amount", "expected"),
    [
        ("10", "0.01", "0.10"),  # 10 x 0.01
        ("0", "5", "0"),  # zero units
        ("2.5", "0.4", "1.00"),  # fractional units: 2.5 x 0.4
        ("-1", "3", "0"),  # negative aggregate bills 0
        ("1000000", "0.0001", "100.0000"),  # 1e6 x 1e-4
    ],
)
def test_standard_is_units_times_amount(units, amount, expected):
    assert cm.standard(D(units), D(amount)) == D(expected)


# ---------------------------------------------------------------------- graduated
GRAD = [
    rng(0, 100, "1", "10"),
    rng(101, 200, "0.5", "5"),
    rng(201, None, "0.1", "0"),
]
GRAD_ADJACENT = [
    rng(0, 100, "1", "10"),
    rng(100, 200, "0.5", "5"),
    rng(200, None, "0.1", "0"),
]


@pytest.mark.parametrize(
    ("units", "expected", "tier_units"),
    [
        ("0", "10", ["0"]),  # first flat even at zero: 0x1 + 10
        ("-5", "10", ["0"]),  # negative units price as zero units
        ("100", "110", ["100"]),  # exactly at to_value: 100x1 + 10; tier 2 not reached
        ("101", "115.5", ["100", "1"]),  # one past: 110 + 1x0.5 + 5
        ("100.5", "115.25", ["100", "0.5"]),  # fractional: 110 + 0.5x0.5 + 5
        ("200", "165", ["100", "100"]),  # 110 + 100x0.5 + 5
        ("250", "170", ["100", "100", "50"]),  # 110 + 55 + 50x0.1
        ("200.25", "165.025", ["100", "100", "0.25"]),  # 165 + 0.25x0.1
    ],
)
def test_graduated_splits_units_across_inclusive_ranges(units, expected, tier_units):
    result = cm.graduated(D(units), GRAD)
    assert result.total == D(expected)
    assert [t["units"] for t in result.tiers] == [D(u) for u in tier_units]
    assert sum(t["amount"] for t in result.tiers) == result.total


@pytest.mark.parametrize("units", ["0", "100", "100.5", "101", "199.99", "200", "1e6"])
def test_graduated_adjacent_spelling_prices_like_inclusive(units):
    a, b = cm.graduated(D(units), GRAD_ADJACENT), cm.graduated(D(units), GRAD)
    assert a.total == b.total
    assert [t["units"] for t in a.tiers] == [t["units"] for t in b.tiers]
    assert cm.volume(D(units), GRAD_ADJACENT) == cm.volume(D(units), GRAD)


def test_graduated_many_tiers():
    # 0-10@1, 11-20@2, 21-30@3, 31-40@4, 41-inf@5, flat 1 each:
    # 45 units = 10x1 + 10x2 + 10x3 + 10x4 + 5x5 = 125, + 5 flats = 130
    ranges = [rng(0, 10, "1", "1"), rng(11, 20, "2", "1"), rng(21, 30, "3", "1"),
              rng(31, 40, "4", "1"), rng(41, None, "5", "1")]  # fmt: skip
    result = cm.graduated(D(45), ranges)
    assert result.total == D(130)
    assert [t["units"] for t in result.tiers] == [D(10)] * 4 + [D(5)]
    assert result.tiers[1] == {
        "from_value": D(11), "to_value": D(20), "units": D(10),
        "per_unit_amount": D(2), "flat_amount": D(1), "amount": D(21),
    }  # fmt: skip


def test_graduated_lago_doc_example():
    # Lago docs: $1 first 100, $0.50 next 100, $0.10 after; 250 units = 100 + 50 + 5
    ranges = [rng(0, 100, "1"), rng(101, 200, "0.5"), rng(201, None, "0.1")]
    assert cm.graduated(D(250), ranges).total == D(155)


@pytest.mark.parametrize(
    "bad",
    [
        [rng(1, None, "1")],  # must start at 0
        [rng(0, 100), rng(102, None)],  # gap
        [rng(0, 100), rng(101, 200)],  # last range must be open
        [rng(0, None), rng(101, None)],  # open range not last
        [rng(0, 100), rng(100, 100), rng(100, None)],  # empty adjacent range
    ],
)
def test_graduated_rejects_malformed_ranges(bad):
    with pytest.raises(ValueError):
        cm.graduated(D(1), bad)


# ------------------------------------------------------------------------- volume
VOL = GRAD


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "0"),  # zero units bill nothing, flat included (as Lago)
        ("-3", "0"),  # negative prices as zero
        ("0.5", "10.5"),  # any usage reaches the first range: 0.5x1 + 10
        ("100", "110"),  # at to_value: still range 1: 100x1 + 10
        ("101", "55.5"),  # one past: range 2: 101x0.5 + 5
        ("100.5", "55.25"),  # fractional above 100 is range 2: 100.5x0.5 + 5
        ("200", "105"),  # 200x0.5 + 5
        ("201", "20.1"),  # range 3: 201x0.1 + 0
        ("65000", "6500"),  # 65000x0.1
    ],
)
def test_volume_prices_all_units_at_the_containing_range(units, expected):
    assert cm.volume(D(units), VOL) == D(expected)


def test_volume_lago_doc_example():
    # Lago docs: 65,000 calls in tier 3 -> 65,000 x 0.0006 + 10 = 49
    ranges = [rng(0, 10000, "0.0010", "10"), rng(10001, 50000, "0.0008", "10"),
              rng(50001, 100000, "0.0006", "10"), rng(100001, None, "0.0004", "10")]  # fmt: skip
    assert cm.volume(D(65000), ranges) == D(49)


# ------------------------------------------------------------------------ package
@pytest.mark.parametrize(
    ("units", "amount", "size", "free", "expected"),
    [
        ("0", "5", 100, 100, "0"),  # nothing paid
        ("100", "5", 100, 100, "0"),  # exactly the free units
        ("101", "5", 100, 100, "5"),  # 1 paid unit -> ceil(1/100) = 1 package
        ("200", "5", 100, 100, "5"),  # 100 paid -> 1 package
        ("201", "5", 100, 100, "10"),  # Lago doc: 101 paid -> 2 packages = $10
        ("100.5", "5", 100, 100, "5"),  # fractional: 0.5 paid -> 1 package
        ("0.001", "2", 1000, 0, "2"),  # tiny usage still buys one package
        ("-50", "5", 10, 0, "0"),  # negative units bill 0
        ("1000", "0.25", 10, 0, "25.00"),  # 100 packages x 0.25
    ],
)
def test_package_bills_whole_packages_beyond_free_units(units, amount, size, free, expected):
    assert cm.package(D(units), D(amount), size, free) == D(expected)


def test_package_rejects_zero_size():
    with pytest.raises(ValueError):
        cm.package(D(1), D(1), 0)


# --------------------------------------------------------------------- percentage
def ev(*values):
    return [(i, D(v)) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("events", "kwargs", "expected", "free_paid"),
    [
        # 2% of (100 + 200) = 6
        (ev(100, 200), {"rate": "2"}, "6", (0, 2)),
        # no events -> 0
        ([], {"rate": "2", "fixed_amount": "1"}, "0", (0, 0)),
        # first 2 events free; event 3: 1% x 100 + 0.5 = 1.5
        (ev(100, 100, 100), {"rate": "1", "fixed_amount": "0.5", "free_units_per_events": 2},
         "1.5", (2, 1)),
        # free 250: 50 free (left 200), 150 free (left 50), 400 -> 350 paid:
        # 10% x 350 + 2 = 37
        (ev(50, 150, 400), {"rate": "10", "fixed_amount": "2",
                            "free_units_per_total_aggregation": "250"}, "37", (2, 1)),
        # both limits (N=3, A=250): A reached first at event 3 -> 37; event 4: 10 + 2
        (ev(50, 150, 400, 100), {"rate": "10", "fixed_amount": "2", "free_units_per_events": 3,
                                 "free_units_per_total_aggregation": "250"}, "49", (2, 2)),
        # both limits (N=1, A=250): N reached first -> 150x10%+2 + 400x10%+2 + 100x10%+2
        (ev(50, 150, 400, 100), {"rate": "10", "fixed_amount": "2", "free_units_per_events": 1,
                                 "free_units_per_total_aggregation": "250"}, "71", (1, 3)),
        # exactly reaching A: event 1 pays fixed on 0 paid value: 0 + 1; event 2: 5 + 1
        (ev(100, 50), {"rate": "10", "fixed_amount": "1",
                       "free_units_per_total_aggregation": "100"}, "7", (0, 2)),
        # min 1 / max 3: 0.1 -> 1, 2 -> 2, 10 -> 3
        (ev(10, 200, 1000), {"rate": "1", "per_transaction_min_amount": "1",
                             "per_transaction_max_amount": "3"}, "6", (0, 3)),
        # clamp applies to rate x value + fixed: 0.1 + 0.5 = 0.6 -> min 1; 5.5 -> max 5
        (ev(10, 500), {"rate": "1", "fixed_amount": "0.5", "per_transaction_min_amount": "1",
                       "per_transaction_max_amount": "5"}, "6", (0, 2)),
        # fractional values: 2.5% x 0.4 + 2.5% x 1.2 = 0.01 + 0.03
        (ev("0.4", "1.2"), {"rate": "2.5"}, "0.04", (0, 2)),
        # negative (refund) lowers but never below 0
        (ev(100, -300), {"rate": "10"}, "0", (0, 2)),
    ],
)
def test_percentage_applies_rate_fixed_free_allowance_and_clamps(events, kwargs, expected,
                                                                  free_paid):
    result = cm.percentage(events, **kwargs)
    assert result.total == D(expected)
    assert (result.free_events, result.paid_events) == free_paid


def test_percentage_counts_free_events_in_time_order_not_list_order():
    # time order: 50 (t=1, free) then 100 (t=2, paid): 10% x 100 = 10
    assert cm.percentage([(2, D(100)), (1, D(50))], rate="10",
                         free_units_per_events=1).total == D(10)


# ---------------------------------------------------------- graduated_percentage
GP = [rng(0, 1000, "2", "1", key="rate"), rng(1001, 5000, "1", "2", key="rate"),
      rng(5001, None, "0.5", "0", key="rate")]  # fmt: skip


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        ("0", "1"),  # first flat at zero units
        ("1000", "21"),  # at to_value: 2% x 1000 + 1
        ("1001", "23.01"),  # 21 + 1% x 1 + 2
        ("1000.5", "23.005"),  # 21 + 1% x 0.5 + 2
        ("6000", "68"),  # 21 + (1% x 4000 + 2) + 0.5% x 1000
        ("-10", "1"),  # negative -> zero units
    ],
)
def test_graduated_percentage_applies_rate_per_range(units, expected):
    assert cm.graduated_percentage(D(units), GP).total == D(expected)


# ------------------------------------------------------------ min amount, rounding
@pytest.mark.parametrize(
    ("minimum", "fees", "billed", "days", "expected"),
    [
        (1000, 200, 15, 31, 284),  # semantics.md: 1000/31x15 - 200 = 283.87 -> 284
        (1000, 0, 15, 31, 484),  # 483.87 -> 484
        (1000, 1200, 31, 31, 0),  # fees above the minimum: no true-up
        (1000, 1000, 31, 31, 0),  # exactly the minimum
        (1000, 0, 31, 31, 1000),  # nothing used: the whole minimum
        (500, 10, 1, 30, 7),  # 16.67 - 10 = 6.67 -> 7
        (3100, 0, 1, 31, 100),  # exact proration
    ],
)
def test_min_amount_true_up_is_prorated_difference(minimum, fees, billed, days, expected):
    assert cm.min_amount_true_up(minimum, fees, billed, days) == expected


def test_min_amount_precise_matches_semantics_example():
    precise = cm.min_amount_true_up_precise(1000, 200, 15, 31)
    assert precise.quantize(D("0.01")) == D("283.87")


@pytest.mark.parametrize(
    ("amount", "exponent", "expected"),
    [
        ("0.005", 2, 1),  # tie goes up
        ("0.004999", 2, 0),
        ("2.5", 0, 3),  # half-up, not banker's
        ("-0.005", 2, -1),  # ties away from zero
        ("12.3456", 3, 12346),  # KWD
        ("99.5", 0, 100),  # JPY
        (str(D(1) * 17 / 31), 2, 55),  # semantics: 100c plan from March 15 -> 55c
        (str(D(1) * 28 / 31), 2, 90),  # semantics: 3-day trial in March -> 90c
    ],
)
def test_round_half_up_to_minor_units(amount, exponent, expected):
    assert cm.round_half_up_to_minor_units(D(amount), exponent) == expected


def test_reference_refuses_float():
    with pytest.raises(TypeError):
        cm.standard(1.5, D(1))  # type: ignore[arg-type]


# ------------------------------------------------------------------- properties
money = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False,
                    allow_infinity=False)  # fmt: skip
units_st = st.decimals(min_value=-10, max_value=100000, places=3, allow_nan=False,
                       allow_infinity=False)  # fmt: skip


@st.composite
def ranges_st(draw, price_key="per_unit_amount"):
    widths = draw(st.lists(st.integers(1, 500), min_size=0, max_size=5))
    prices = draw(st.lists(money, min_size=len(widths) + 1, max_size=len(widths) + 1))
    flats = draw(st.lists(money, min_size=len(widths) + 1, max_size=len(widths) + 1))
    inclusive, adjacent = [], []
    lo = 0
    for i, w in enumerate(widths):
        hi = lo + w
        inclusive.append(rng(0 if i == 0 else lo + 1, hi, prices[i], flats[i], price_key))
        adjacent.append(rng(lo, hi, prices[i], flats[i], price_key))
        lo = hi
    n = len(widths)
    inclusive.append(rng(0 if n == 0 else lo + 1, None, prices[n], flats[n], price_key))
    adjacent.append(rng(lo, None, prices[n], flats[n], price_key))
    return inclusive, adjacent


@given(ranges_st(), units_st, units_st)
def test_graduated_total_is_monotonic_in_units(rs, a, b):
    inclusive, _ = rs
    lo, hi = sorted((a, b))
    assert cm.graduated(lo, inclusive).total <= cm.graduated(hi, inclusive).total


@given(ranges_st(), units_st)
def test_graduated_adjacent_and_inclusive_spellings_price_the_same(rs, u):
    inclusive, adjacent = rs
    a, b = cm.graduated(u, inclusive), cm.graduated(u, adjacent)
    assert a.total == b.total
    assert [t["units"] for t in a.tiers] == [t["units"] for t in b.tiers]
    assert cm.volume(u, inclusive) == cm.volume(u, adjacent)


@given(ranges_st(), units_st)
def test_graduated_breakdown_units_add_up_to_units(rs, u):
    result = cm.graduated(u, rs[0])
    assert sum(t["units"] for t in result.tiers) == max(u, D(0))
    assert sum(t["amount"] for t in result.tiers) == result.total
    # Only the last reached range may be partially filled.
    for t in result.tiers[:-1]:
        assert t["to_value"] is not None


@given(st.lists(st.integers(1, 500), min_size=1, max_size=4),
       st.lists(money, min_size=5, max_size=5), units_st)  # fmt: skip
def test_volume_never_exceeds_graduated_when_prices_decrease_and_no_flats(widths, ps, u):
    prices = sorted(ps[: len(widths) + 1], reverse=True)
    ranges, lo = [], 0
    for i, w in enumerate(widths):
        ranges.append(rng(0 if i == 0 else lo + 1, lo + w, prices[i]))
        lo += w
    ranges.append(rng(lo + 1, None, prices[len(widths)]))
    assert cm.volume(u, ranges) <= cm.graduated(u, ranges).total


@given(ranges_st(price_key="rate"), units_st)
def test_graduated_percentage_equals_graduated_at_rate_over_100(rs, u):
    as_price = [{**r, "per_unit_amount": D(r["rate"]) / 100} for r in rs[0]]
    assert cm.graduated_percentage(u, rs[0]).total == cm.graduated(u, as_price).total


@given(units_st, money.filter(lambda m: m > 0), st.integers(1, 1000),
       st.decimals(min_value=0, max_value=500, places=2))  # fmt: skip
def test_package_is_smallest_multiple_of_amount_covering_paid_units(u, amount, size, free):
    result = cm.package(u, amount, size, free)
    packages = result / amount
    assert packages == packages.to_integral_value()
    paid = max(D(0), max(u, D(0)) - free)
    assert packages * size >= paid
    assert packages == 0 or (packages - 1) * size < paid


values_st = st.lists(st.decimals(min_value=0, max_value=1000, places=2), max_size=12)


@given(values_st, money, money)
def test_percentage_without_free_or_clamp_is_rate_of_sum_plus_fixed_per_event(vs, rate, fixed):
    events = [(i, v) for i, v in enumerate(vs)]
    expected = rate / 100 * sum(vs, D(0)) + fixed * len(vs)
    assert cm.percentage(events, rate, fixed).total == expected


positive_money = money.filter(lambda m: m > 0)


# A free amount of 0 means "no amount limit" (then only the event limit applies), so
# the property holds for set limits (> 0): a larger allowance never costs more.
@given(values_st, money, money, st.integers(0, 5), positive_money, positive_money)
def test_percentage_total_non_increasing_as_free_amount_grows(vs, rate, fixed, n, a1, a2):
    events = [(i, v) for i, v in enumerate(vs)]
    lo, hi = sorted((a1, a2))
    kw = {"rate": rate, "fixed_amount": fixed, "free_units_per_events": n,
          "per_transaction_min_amount": D("0.5"), "per_transaction_max_amount": D(50)}  # fmt: skip
    assert (cm.percentage(events, free_units_per_total_aggregation=hi, **kw).total
            <= cm.percentage(events, free_units_per_total_aggregation=lo, **kw).total)  # fmt: skip


@given(values_st, money, money, money, money)
def test_percentage_paid_events_are_each_within_min_and_max(vs, rate, fixed, m1, m2):
    lo, hi = sorted((m1, m2))
    events = [(i, v) for i, v in enumerate(vs)]
    r = cm.percentage(events, rate, fixed, per_transaction_min_amount=lo,
                      per_transaction_max_amount=hi)  # fmt: skip
    assert r.paid_events * lo <= r.total <= r.paid_events * hi


@given(st.decimals(min_value=-10**9, max_value=10**9, places=6), st.integers(0, 3))
def test_round_half_up_is_within_half_a_minor_unit(amount, exponent):
    cents = cm.round_half_up_to_minor_units(amount, exponent)
    diff = D(cents) - amount.scaleb(exponent)
    assert abs(diff) <= D("0.5")
    if abs(diff) == D("0.5"):  # ties go away from zero
        assert abs(D(cents)) > abs(amount.scaleb(exponent))


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(28, 31), st.data())
def test_min_amount_true_up_tops_fees_up_to_the_prorated_minimum(minimum, fees, days, data):
    billed = data.draw(st.integers(0, days))
    true_up = cm.min_amount_true_up(minimum, fees, billed, days)
    prorated = D(minimum) * billed / days
    assert true_up >= 0
    if fees >= prorated:
        assert true_up == 0
    else:
        assert abs(D(fees + true_up) - prorated) <= D("0.5")


# ----------------------------------------------------------------- aggregations
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = datetime(2026, 4, 1, tzinfo=UTC)


def event(tx, ts, sub="sub_1", code="m", **props):
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code,
            "timestamp": ts, "properties": props}  # fmt: skip


def test_dedupe_keeps_first_accepted_copy_even_if_later_copy_differs():
    evs = [event("a", T0, gb="1"), event("a", T0 + timedelta(days=1), gb="5"),
           event("a", T0, sub="sub_2", gb="7")]  # fmt: skip
    kept = agg.dedupe(evs)
    assert [e["properties"]["gb"] for e in kept] == ["1", "7"]
    assert agg.sum_agg(agg.select_period(evs, T0, T1, "m", "sub_1"), "gb") == D(1)


def test_select_period_is_half_open_and_filters_code():
    evs = [event("a", T0), event("b", T1), event("c", T1 - timedelta(microseconds=1)),
           event("d", T0, code="other"), event("e", "2026-03-31T23:59:59Z")]  # fmt: skip
    assert [e["transaction_id"] for e in agg.select_period(evs, T0, T1, "m")] == ["a", "c", "e"]


def test_basic_aggregations():
    evs = [event("a", T0, v="2.5", u="x"), event("b", T0 + timedelta(days=2), v=4, u="y"),
           event("c", T0 + timedelta(days=1), v="-1", u="x")]  # fmt: skip
    assert agg.count_agg(evs) == 3
    assert agg.sum_agg(evs, "v") == D("5.5")
    assert agg.max_agg(evs, "v") == D(4)
    assert agg.max_agg([], "v") == 0
    assert agg.latest_agg(evs, "v") == D(4)  # latest timestamp, not last in list
    assert agg.latest_agg([], "v") == 0
    assert agg.unique_count_agg(evs, "u") == 2


@pytest.mark.parametrize("bad", [None, "abc", True, "", "NaN"])
def test_non_numeric_field_is_an_error_not_zero(bad):
    with pytest.raises(agg.InvalidEventValue):
        agg.sum_agg([event("a", T0, v=bad)], "v")
    with pytest.raises(agg.InvalidEventValue):
        agg.sum_agg([event("a", T0)], "v")


def test_recurring_unique_count_counts_values_active_at_any_time_in_period():
    evs = [event("1", T0 + timedelta(days=1), seat="carol"),
           event("2", T0 + timedelta(days=2), seat="alice", operation_type="remove"),
           event("3", T0 + timedelta(days=3), seat="dave"),
           event("4", T0 + timedelta(days=4), seat="dave", operation_type="remove")]  # fmt: skip
    start = {"alice", "bob"}
    assert agg.unique_count_agg(evs, "seat", recurring=True, initially_active=start) == 4
    assert agg.unique_count_active_at_end(evs, "seat", start) == {"bob", "carol"}
    assert agg.unique_count_agg(evs, "seat") == 2  # non-recurring: carol, dave


def test_weighted_sum_is_time_weighted_average_level():
    # 10-day period; level 0 for 2 days, 10 for 3 days, 4 for 5 days: (30 + 20)/10 = 5
    start, end = T0, T0 + timedelta(days=10)
    evs = [event("a", T0 + timedelta(days=2), gb=10), event("b", T0 + timedelta(days=5), gb=-6)]
    assert agg.weighted_sum_agg(evs, "gb", start, end) == D(5)
    # recurring: initial level 2 adds 2 over the whole period
    assert agg.weighted_sum_agg(evs, "gb", start, end, initial_level=D(2)) == D(7)
    assert agg.weighted_sum_level_at_end(evs, "gb", D(2)) == D(6)
    # one second at level 86400 over one day = 1
    day = [event("c", T0 + timedelta(days=1) - timedelta(seconds=1), gb=86400)]
    assert agg.weighted_sum_agg(day, "gb", T0, T0 + timedelta(days=1)) == D(1)


@pytest.mark.parametrize(
    ("value", "fn", "precision", "expected"),
    [
        ("2.345", "round", 2, "2.35"),
        ("2.5", "round", 0, "3"),
        ("-2.5", "round", 0, "-3"),
        ("2.341", "ceil", 2, "2.35"),
        ("-2.349", "floor", 2, "-2.35"),
        ("1234", "round", -2, "1200"),
        ("1.9", "floor", None, "1"),
        ("1.9", None, None, "1.9"),
    ],
)
def test_rounding_function(value, fn, precision, expected):
    assert agg.apply_rounding(D(value), fn, precision) == D(expected)
