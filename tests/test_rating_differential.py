"""Differential test: ClickHouse (chDB), PostgreSQL and the pure-Python reference must
agree on every fee of generated catalogs and event streams.

One hypothesis example is a *batch* of cases (each its own plan, customer and
subscription), loaded and built once per warehouse: the number of dbt invocations stays
at two per example however many cases it holds. Generated: every charge model, many
tiers with boundary-hugging usage (exactly at to_value, one past, half past), zero
usage, fractional and huge values, resent duplicates (the first copy wins), count and
sum metrics, and rounding functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from billhouse.catalog import parse_catalog
from billhouse.close import load_inputs
from billhouse.dbt_runner import run_dbt
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

from .reference import aggregations as ref_agg
from .reference import charge_models as ref

MODELS = ("standard", "graduated", "volume", "package", "percentage", "graduated_percentage")

prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=4)
small_prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("0.5"), places=4)
rates = st.decimals(min_value=Decimal("0"), max_value=Decimal("30"), places=2)


@st.composite
def ranges(draw: st.DrawFn, price_key: str) -> list[dict[str, Any]]:
    widths = draw(st.lists(st.integers(1, 500), min_size=0, max_size=7))
    adjacent = draw(st.booleans())
    result, lower = [], 0
    for width in widths:
        upper = lower + width
        start = lower if (adjacent or not result) else lower + 1
        result.append({"from_value": start, "to_value": upper})
        lower = upper
    result.append({"from_value": lower if (adjacent or not result) else lower + 1, "to_value": None})
    for r in result:
        r[price_key] = str(draw(rates if price_key == "rate" else small_prices))
        r["flat_amount"] = str(draw(st.sampled_from([Decimal(0), Decimal(0), draw(prices)])))
    return result


@dataclass
class Case:
    name: str
    metric: str  # units_sum | units_count | units_ceil
    charge_model: str
    properties: dict[str, Any]
    events: list[tuple[str, str]]  # (transaction_id, value) in arrival order (duplicates included)


@st.composite
def cases(draw: st.DrawFn, name: str) -> Case:
    model = draw(st.sampled_from(MODELS))
    if model == "standard":
        properties: dict[str, Any] = {"amount": str(draw(prices))}
    elif model == "package":
        properties = {"amount": str(draw(prices)), "package_size": draw(st.integers(1, 1000)),
                      "free_units": draw(st.integers(0, 300))}
    elif model == "percentage":
        properties = {"rate": str(draw(rates))}
        if draw(st.booleans()):
            properties["fixed_amount"] = str(draw(small_prices))
        if draw(st.booleans()):
            properties["free_units_per_events"] = draw(st.integers(1, 4))
        if draw(st.booleans()):
            properties["free_units_per_total_aggregation"] = str(draw(st.integers(1, 400)))
        if draw(st.booleans()):
            low = draw(small_prices)
            properties["per_transaction_min_amount"] = str(low)
            properties["per_transaction_max_amount"] = str(low + draw(prices))
    else:
        key = {"graduated": "graduated_ranges", "volume": "volume_ranges",
               "graduated_percentage": "graduated_percentage_ranges"}[model]
        properties = {key: draw(ranges("rate" if model == "graduated_percentage" else "per_unit_amount"))}
    metric = draw(st.sampled_from(["units_sum", "units_sum", "units_count", "units_ceil"]))
    # values: boundary-hugging totals, fractions, zero, huge
    boundaries = [Decimal(0)]
    for r in properties.get(next((k for k in properties if k.endswith("_ranges")), ""), []):
        if r["to_value"] is not None:
            boundaries += [Decimal(r["to_value"]), Decimal(r["to_value"]) + 1, Decimal(r["to_value"]) + Decimal("0.5")]
    value = st.one_of(
        st.decimals(min_value=Decimal(0), max_value=Decimal(300), places=3),
        st.sampled_from(boundaries),
        st.just(Decimal(10) ** 9),
    )
    values = draw(st.lists(value, min_size=0, max_size=6))
    if values and draw(st.booleans()) and metric != "units_count":
        values = [draw(st.sampled_from(boundaries))]  # one event: units exactly on a boundary
    events = [(f"{name}-{i}", str(v)) for i, v in enumerate(values)]
    for index in draw(st.lists(st.integers(0, max(len(events) - 1, 0)), max_size=2)) if events else []:
        events.append((events[index][0], str(draw(value))))  # resent: ignored, first copy wins
    return Case(name, metric, model, properties, events)


def document(batch: list[Case]) -> dict[str, Any]:
    return {
        "billable_metrics": [
            {"code": "units_sum", "aggregation_type": "sum_agg", "field_name": "v"},
            {"code": "units_count", "aggregation_type": "count_agg"},
            {"code": "units_ceil", "aggregation_type": "sum_agg", "field_name": "v",
             "rounding_function": "ceil", "rounding_precision": 1},
        ],
        "plans": [
            {"code": c.name, "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
             "charges": [{"billable_metric_code": c.metric, "charge_model": c.charge_model, "properties": c.properties}]}
            for c in batch
        ],
        "customers": [{"external_id": c.name, "currency": "EUR"} for c in batch],
        "subscriptions": [
            {"external_id": c.name, "external_customer_id": c.name, "plan_code": c.name,
             "subscription_at": "2026-11-01T00:00:00Z"}
            for c in batch
        ],
    }


def events(batch: list[Case]) -> list[dict[str, Any]]:
    return [
        {"transaction_id": tx, "external_subscription_id": c.name, "code": c.metric,
         "timestamp": f"2026-11-{2 + i % 27:02d}T{i % 24:02d}:00:00Z", "properties": {"v": v}}
        for c in batch
        for i, (tx, v) in enumerate(c.events)
    ]


def reference_cents(case: Case) -> int:
    first: dict[str, tuple[int, Decimal]] = {}
    for i, (tx, v) in enumerate(case.events):
        first.setdefault(tx, (i, Decimal(v)))
    ordered = [value for _, value in sorted(first.values(), key=lambda p: p[0])]
    if case.metric == "units_count":
        ordered = [Decimal(1)] * len(ordered)
    units = sum(ordered, Decimal(0))
    if case.metric == "units_ceil":
        units = ref_agg.apply_rounding(units, "ceil", 1)
    p = case.properties
    if case.charge_model == "standard":
        amount = ref.standard(units, p["amount"])
    elif case.charge_model == "package":
        amount = ref.package(units, p["amount"], str(p["package_size"]), str(p["free_units"]))
    elif case.charge_model == "graduated":
        amount = ref.graduated(units, p["graduated_ranges"]).total
    elif case.charge_model == "volume":
        amount = ref.volume(units, p["volume_ranges"])
    elif case.charge_model == "graduated_percentage":
        amount = ref.graduated_percentage(units, p["graduated_percentage_ranges"]).total
    else:
        # events are timestamped in arrival order (first copies), as events() writes them
        amount = ref.percentage(
            list(enumerate(ordered)), p["rate"], p.get("fixed_amount"), p.get("free_units_per_events"),
            p.get("free_units_per_total_aggregation"), p.get("per_transaction_min_amount"),
            p.get("per_transaction_max_amount"),
        ).total
    return ref.round_half_up_to_minor_units(amount, 2)


def warehouse_fees(settings: Settings, batch: list[Case]) -> dict[str, tuple[str, str, int]]:
    catalog = parse_catalog(document(batch), source="generated")
    load_inputs(settings, catalog, events(batch))
    run_dbt(settings, ["build", "--select", "+int_charge_fees_rated", "--indirect-selection", "cautious"], {"as_of": "2026-12-01T00:00:00Z"})
    with open_warehouse(settings) as warehouse:
        rows = warehouse.query(
            "select external_subscription_id, units, precise_amount, amount_cents from billhouse.int_charge_fees_rated"
        )
    names = {c.name for c in batch}
    return {
        r["external_subscription_id"]: (str(Decimal(r["units"]).normalize()), str(Decimal(r["precise_amount"]).normalize()),
                                        int(r["amount_cents"]))
        for r in rows
        if r["external_subscription_id"] in names
    }


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory):
    root = Path(tmp_path_factory.mktemp("differential"))
    clickhouse = Settings(data_dir=root / "chdb")
    postgres = Settings(data_dir=root / "pg", warehouse_target="postgres")
    yield clickhouse, postgres
    stop_ledger(postgres)


BATCH = 50
_batches = iter(range(1000))


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # each example costs two dbt builds: no shrinking
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_clickhouse_postgres_and_reference_agree_on_every_fee(engines, data: st.DataObject) -> None:
    clickhouse, postgres = engines
    batch_number = next(_batches)
    batch = [data.draw(cases(f"b{batch_number}c{i}"), label=f"case {i}") for i in range(BATCH)]
    on_clickhouse = warehouse_fees(clickhouse, batch)
    on_postgres = warehouse_fees(postgres, batch)
    for case in batch:
        expected = reference_cents(case)
        ch, pg = on_clickhouse[case.name], on_postgres[case.name]
        assert ch == pg, f"{case}: ClickHouse {ch} != PostgreSQL {pg}"
        assert ch[2] == expected, f"{case}: warehouses bill {ch[2]} cents, the reference {expected}"
