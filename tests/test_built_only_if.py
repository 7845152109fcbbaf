"""Models built empty when nothing in the close can give them a row (macros/built_only_if.sql).

A catalog without per-event, percentage or minimum charges, closed with no late period,
still planned each of those models' queries at every close (0.1-0.3 s each on
ClickHouse with nothing to read). They are now built as an empty select of the columns
their YAML declares. The first store below has none of those charges and no invoice yet:
its close builds them empty; a close of the same window with ``build_every_model`` builds
them from their queries, which must yield exactly the declared columns and types, and
the same invoice drafts. The second has every one of them and a late event: its second
close builds each model from its query, with rows, and the same declared types.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from bench.billed_fees import mark_drafts_billed
from billhouse.catalog import parse_catalog
from billhouse.close import build_drafts, close_variables, load_inputs
from billhouse.settings import PROJECT_DIR, Settings
from billhouse.warehouse import open_warehouse

from tests.conftest import CATALOG, DEC_1, FIRST_BATCH, NOV_1, _event

MODELS_DIR = PROJECT_DIR / "models"
DRAFTS = {
    "fct_invoice_draft_fees": "select * from billhouse.fct_invoice_draft_fees order by fee_key",
    "fct_invoice_drafts": "select * from billhouse.fct_invoice_drafts order by 1",
}


def models_built_only_if() -> dict[str, Path]:
    return {
        path.stem: path for path in sorted(MODELS_DIR.rglob("*.sql"))
        if "billhouse.built_only_if(" in path.read_text()
    }


def declared_columns(model: str) -> list[tuple[str, str | None]]:
    for path in MODELS_DIR.rglob("*.yml"):
        for entry in (yaml.safe_load(path.read_text()) or {}).get("models", []):
            if entry["name"] == model:
                return [(column["name"], column.get("data_type")) for column in entry.get("columns", [])]
    raise AssertionError(f"{model} has no YAML entry")


@dataclass
class Build:
    compiled: dict[str, str]  # model -> compiled SQL
    columns: dict[str, list[tuple[str, str]]]  # model -> (name, type) as built
    rows: dict[str, int]
    drafts: dict[str, list[dict]]
    usage_sql: str  # int_usage_aggregated, compiled


def _close(settings: Settings, as_of: datetime = NOV_1, **settings_overrides: str) -> Build:
    build_drafts(settings, {**close_variables(as_of), **settings_overrides})
    models = models_built_only_if()
    compiled_dir = settings.dbt_target_dir / "compiled" / "billhouse"
    with open_warehouse(settings) as warehouse:
        columns = {
            model: [
                (row["name"], row["type"]) for row in warehouse.query(
                    "select name, type from system.columns where database = 'billhouse'"
                    f" and table = '{model}' order by position"
                )
            ]
            for model in models
        }
        rows = {model: warehouse.query(f"select count() as n from billhouse.{model}")[0]["n"] for model in models}
        drafts = {name: warehouse.query(sql) for name, sql in DRAFTS.items()}
    compiled = {
        model: (compiled_dir / path.relative_to(PROJECT_DIR)).read_text() for model, path in models.items()
    }
    usage_sql = (compiled_dir / "models" / "metering" / "int_usage_aggregated.sql").read_text()
    return Build(compiled, columns, rows, drafts, usage_sql)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Build, Build]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("built_only_if")))
    load_inputs(settings, parse_catalog(CATALOG, source="tests/conftest.py"), FIRST_BATCH)
    shortcut = _close(settings)
    every_model = _close(settings, build_every_model="true")
    yield shortcut, every_model


def test_the_models_are_the_ones_nothing_in_this_catalog_feeds() -> None:
    assert set(models_built_only_if()) == {
        "int_pay_in_advance_periods", "int_pay_in_advance_events", "int_pay_in_advance_charge_fees",
        "int_percentage_event_amounts", "int_charge_minimum_true_ups", "int_late_adjustment_fees",
    }


@pytest.mark.parametrize("model", sorted(models_built_only_if()))
def test_each_declares_every_column_with_its_type(model: str) -> None:
    columns = declared_columns(model)
    assert columns and all(data_type for _, data_type in columns), columns


def test_the_close_builds_them_empty_without_their_query(builds: tuple[Build, Build]) -> None:
    shortcut, _ = builds
    for model, sql in shortcut.compiled.items():
        assert "from null(" in sql and " join " not in sql, model
        assert shortcut.rows[model] == 0
        assert shortcut.columns[model] == declared_columns(model), model


def test_their_queries_yield_the_declared_columns(builds: tuple[Build, Build]) -> None:
    _, every_model = builds
    for model, sql in every_model.compiled.items():
        assert "from null(" not in sql and " join " in sql, model
        assert every_model.columns[model] == declared_columns(model), model
        assert every_model.rows[model] == 0
    # where the per-event chain's queries run without per-event charges, they read no event
    for model in ("int_pay_in_advance_periods", "int_pay_in_advance_events"):
        sql = every_model.compiled[model]
        events = sql[sql.index("events as ("):]
        assert "where false" in events[:events.index("),")], model


def test_both_ways_draft_the_same_invoices(builds: tuple[Build, Build]) -> None:
    shortcut, every_model = builds
    assert shortcut.drafts["fct_invoice_draft_fees"], "the store's close drafts fees"
    assert shortcut.drafts == every_model.drafts


def test_usage_is_aggregated_without_unique_counts_when_no_charge_counts_uniques(
    builds: tuple[Build, Build],
) -> None:
    shortcut, _ = builds
    assert "distinct_values" not in shortcut.usage_sql and "unique_counts" not in shortcut.usage_sql
    assert "rounded as" in shortcut.usage_sql


# --- a catalog with every such charge, and a late event ---

FEATURED_CATALOG = {
    "billable_metrics": [
        {"code": "calls", "name": "Calls", "aggregation_type": "count_agg"},
        {"code": "gb", "name": "Storage", "aggregation_type": "sum_agg", "field_name": "gb"},
    ],
    "plans": [{
        "code": "featured", "name": "Featured", "interval": "monthly", "amount_cents": 1000,
        "amount_currency": "EUR",
        "charges": [
            # billed per event as they arrive
            {"billable_metric_code": "calls", "charge_model": "standard", "pay_in_advance": True,
             "properties": {"amount": "0.01"}},
            # in arrears, with a minimum the usage stays under
            {"billable_metric_code": "gb", "charge_model": "percentage", "properties": {"rate": "1"},
             "min_amount_cents": 5000},
        ],
    }],
    "customers": [{"external_id": "cus_f", "name": "Featured SA", "currency": "EUR", "timezone": "Europe/Paris"}],
    "subscriptions": [{"external_id": "sub_f", "external_customer_id": "cus_f", "plan_code": "featured",
                       "subscription_at": "2026-09-30T22:00:00Z"}],
}
FEATURED_EVENTS = [
    *[_event(f"call-{day}", "sub_f", "calls", f"2026-10-{day:02d}T09:00:00Z") for day in (2, 9, 16)],
    _event("gb-1", "sub_f", "gb", "2026-10-05T09:00:00Z", gb="120"),
    _event("gb-2", "sub_f", "gb", "2026-10-25T09:00:00Z", gb="80"),
]
LATE_EVENT = _event("gb-late", "sub_f", "gb", "2026-10-28T09:00:00Z", gb="300")


@pytest.fixture(scope="module")
def featured(tmp_path_factory: pytest.TempPathFactory) -> Build:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("built_only_if_featured")))
    catalog = parse_catalog(FEATURED_CATALOG, source="tests/test_built_only_if.py")
    load_inputs(settings, catalog, FEATURED_EVENTS)
    _close(settings)
    mark_drafts_billed(settings)
    load_inputs(settings, catalog, [LATE_EVENT])
    return _close(settings, as_of=DEC_1)


def test_with_every_such_charge_and_a_late_event_each_is_built_from_its_query(featured: Build) -> None:
    for model, sql in featured.compiled.items():
        assert "from null(" not in sql, model
        assert featured.rows[model] > 0, model
        assert featured.columns[model] == declared_columns(model), model
    [adjustment] = [fee for fee in featured.drafts["fct_invoice_draft_fees"] if fee["fee_kind"] == "adjustment"]
    # 1 % of the late 300 GB, for October, on the invoice of December 1
    assert (adjustment["amount_cents"], str(adjustment["issuing_date"])) == (300, "2026-12-01")
