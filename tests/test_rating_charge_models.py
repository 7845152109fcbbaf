"""Every charge model on hand-computed cases, through ``billhouse simulate --json``
(the real pipeline: dbt on a throwaway chDB, the embedded ledger), and the pure-Python
reference agrees with each hand computation."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from billhouse.cli import main

from .rating_cases import CASES, Case, scenario
from .reference import charge_models as ref


@pytest.fixture(scope="module")
def invoices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    path = Path(tmp_path_factory.mktemp("scenario")) / "rating.yml"
    path.write_text(yaml.safe_dump(scenario()))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["simulate", str(path), "--json"]) == 0
    document = json.loads(out.getvalue())
    return {invoice["external_customer_id"].removeprefix("cus_"): invoice for invoice in document["invoices"]}


@pytest.fixture(scope="module")
def postgres_invoices() -> dict[str, dict]:
    from billhouse.catalog import parse_instant
    from billhouse.simulate import Scenario, invoices_as_json, simulate

    document = scenario()
    invoices = simulate(
        Scenario("rating.yml", parse_instant(document["as_of"]), document, document["events"]),
        warehouse_target="postgres",
    )
    return {i["external_customer_id"].removeprefix("cus_"): i for i in invoices_as_json(invoices)["invoices"]}


def test_postgres_warehouse_bills_every_case_identically(invoices, postgres_invoices) -> None:
    def comparable(invoice: dict) -> dict:
        return {k: v for k, v in invoice.items() if k != "number"}

    assert {k: comparable(v) for k, v in postgres_invoices.items()} == {k: comparable(v) for k, v in invoices.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_charge_model_amount_matches_hand_computation(invoices: dict[str, dict], case: Case) -> None:
    invoice = invoices[case.name]
    charges = [fee for fee in invoice["fees"] if fee["kind"] == "charge"]
    assert sum(fee["amount_cents"] for fee in charges) == case.expected_cents
    assert invoice["total_cents"] == case.expected_cents
    [priced] = [fee for fee in charges if not fee["details"].get("true_up")]
    assert priced["charge_model"] == case.charge_model
    assert Decimal(priced["units"]) == sum((Decimal(v) for v in case.values), Decimal(0))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reference_agrees_with_hand_computation(case: Case) -> None:
    units = sum((Decimal(v) for v in case.values), Decimal(0))
    props = case.properties
    if case.charge_model == "standard":
        amount = ref.standard(units, props["amount"])
    elif case.charge_model == "graduated":
        amount = ref.graduated(units, props["graduated_ranges"]).total
    elif case.charge_model == "volume":
        amount = ref.volume(units, props["volume_ranges"])
    elif case.charge_model == "package":
        amount = ref.package(units, props["amount"], str(props["package_size"]), str(props.get("free_units", 0)))
    elif case.charge_model == "percentage":
        amount = ref.percentage(
            [(i, v) for i, v in enumerate(case.values)],
            props["rate"],
            props.get("fixed_amount"),
            props.get("free_units_per_events"),
            props.get("free_units_per_total_aggregation"),
            props.get("per_transaction_min_amount"),
            props.get("per_transaction_max_amount"),
        ).total
    else:
        amount = ref.graduated_percentage(units, props["graduated_percentage_ranges"]).total
    cents = ref.round_half_up_to_minor_units(amount, 2)
    if case.min_amount_cents:
        cents += ref.min_amount_true_up(case.min_amount_cents, cents, 30, 30)
    assert cents == case.expected_cents


def test_graduated_fee_lists_its_tiers(invoices: dict[str, dict]) -> None:
    [fee] = [f for f in invoices["grad_three_tiers"]["fees"] if f["kind"] == "charge"]
    tiers = fee["details"]["tiers"]
    assert [(t["from_value"], t["to_value"], t["units"], t["amount"]) for t in tiers] == [
        ("0", "100", "100", "2"),
        ("101", "200", "100", "2.5"),
        ("201", None, "50", "0.05"),
    ]


def test_charge_minimum_adds_a_true_up_line(invoices: dict[str, dict]) -> None:
    fees = [f for f in invoices["min_true_up"]["fees"] if f["kind"] == "charge"]
    assert sorted((bool(f["details"].get("true_up")), f["amount_cents"]) for f in fees) == [(False, 200), (True, 800)]
    assert not any(f["details"].get("true_up") for f in invoices["min_exceeded"]["fees"])
