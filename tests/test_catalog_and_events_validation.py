"""Bad input is refused before anything is stored, with the place, field and reason."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from billhouse.catalog import parse_catalog
from billhouse.cli import main
from billhouse.errors import CatalogError, EventError
from billhouse.events import validate_event, validate_events

from .conftest import CATALOG


def _catalog_with(path: list, value: object) -> dict:
    document = copy.deepcopy(CATALOG)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "where", "field", "reason"),
    [
        (["plans", 0, "charges", 0, "properties", "amount"], 0.003, "charge[0] 'api_calls'", "amount", "floats lose cents"),
        (["plans", 0, "charges", 0, "properties", "amount"], "abc", "plan 'starter'", "amount", "not a decimal"),
        (["plans", 0, "charges", 0, "billable_metric_code"], "nope", "plan 'starter' charge[0]", "billable_metric_code", "no billable metric"),
        (["plans", 0, "charges", 0, "charge_model"], "magic", "plan 'starter'", "charge_model", "must be one of"),
        (["plans", 0, "amount_cents"], -5, "plan 'starter'", "amount_cents", "≥ 0"),
        (["billable_metrics", 1, "field_name"], None, "billable_metric 'storage_gb'", "field_name", "required"),
        (["customers", 0, "timezone"], "Mars/Olympus", "customer 'cus_a'", "timezone", "unknown IANA"),
        (["subscriptions", 0, "plan_code"], "tokyo", "subscription 'sub_a'", "plan_code", "no FX"),
        (["subscriptions", 0, "subscription_at"], "2026-10-01T00:00:00", "subscription 'sub_a'", "subscription_at", "no UTC offset"),
    ],
)
def test_catalog_errors_name_file_object_field_and_reason(path, value, where, field, reason) -> None:
    with pytest.raises(CatalogError) as error:
        parse_catalog(_catalog_with(path, value), source="pricing.yml")
    message = str(error.value)
    assert message.startswith("pricing.yml")
    assert where in message
    assert f"'{field}'" in message
    assert reason in message


def test_a_charge_minimum_on_a_pay_in_advance_charge_is_refused() -> None:
    """Per-event fees bill the period's peak and a minimum is trued up against its final
    total: where usage fell, the difference would be billed twice."""
    document = copy.deepcopy(CATALOG)
    document["plans"][0]["charges"][1].update(pay_in_advance=True, min_amount_cents=500)
    with pytest.raises(CatalogError) as error:
        parse_catalog(document, source="pricing.yml")
    assert error.value.field == "min_amount_cents"
    assert "charge[1] 'storage_gb'" in str(error.value) and "pay_in_advance" in error.value.reason
    document["plans"][0]["charges"][1].update(min_amount_cents=0)
    assert parse_catalog(document).plans[0].charges[1].pay_in_advance


def test_duplicate_codes_are_refused() -> None:
    document = copy.deepcopy(CATALOG)
    document["plans"].append(copy.deepcopy(document["plans"][0]))
    with pytest.raises(CatalogError, match="plans 'starter'.*defined twice"):
        parse_catalog(document)


CATALOG_OBJ = parse_catalog(CATALOG)


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        ({"external_subscription_id": "s", "code": "api_calls"}, "transaction_id", "required"),
        ({"transaction_id": "t", "code": "api_calls"}, "external_subscription_id", "required"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": ""}, "code", "required"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "api_calls", "timestamp": "yesterday"}, "timestamp", "ISO 8601"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "api_calls", "properties": [1]}, "properties", "object"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "storage_gb", "properties": {}}, "properties.gb", "required by billable metric"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "storage_gb", "properties": {"gb": "lots"}}, "properties.gb", "must be a number"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "api_calls", "properties": {"k\x00": 1}}, "properties", "NUL character"),
        ({"transaction_id": "t", "external_subscription_id": "s", "code": "api_calls", "properties": {"k": ["\udc00"]}}, "properties", "unpaired surrogate"),
        ({"transaction_id": "t\ud800", "external_subscription_id": "s", "code": "api_calls"}, "transaction_id", "unpaired surrogate"),
    ],
)
def test_event_errors_name_the_index_field_and_reason(event, field, reason) -> None:
    with pytest.raises(EventError) as error:
        validate_events([_valid_event(), event], CATALOG_OBJ)
    assert error.value.index == 1
    assert error.value.field == field
    assert reason in str(error.value)


def _valid_event() -> dict:
    return {"transaction_id": "ok", "external_subscription_id": "s", "code": "api_calls"}


def test_event_timestamps_accept_unix_seconds_and_keep_milliseconds() -> None:
    event = validate_event(0, {**_valid_event(), "timestamp": 1793491200.1234})
    assert event.timestamp == datetime(2026, 11, 1, 0, 0, 0, 123000, tzinfo=timezone.utc)
    iso = validate_event(0, {**_valid_event(), "timestamp": "2026-11-01T01:00:00+01:00"})
    assert iso.timestamp == datetime(2026, 11, 1, tzinfo=timezone.utc)


def test_event_numbers_keep_their_decimal_text() -> None:
    event = validate_event(0, {**_valid_event(), "properties": {"gb": Decimal("0.1")}})
    assert event.properties == '{"gb": "0.1"}'


def test_cli_reports_a_bad_catalog_in_one_line(tmp_path, capsys) -> None:
    catalog = tmp_path / "pricing.yml"
    catalog.write_text("plans:\n  - code: p\n    interval: monthly\n    amount_cents: 1.5\n    amount_currency: EUR\n")
    assert main(["--data-dir", str(tmp_path / "data"), "load", str(catalog)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pricing.yml plan 'p': field 'amount_cents': must be an integer" in err
