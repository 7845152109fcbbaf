"""One rule for a number written in an event property (billhouse/property_numbers.py).

Whatever ingestion accepts as a metric's field value, both warehouses read as the number
it spells, to 12 places (further digits dropped): chDB's stored `property_numbers`, its
JSON read (custom expressions, the `property_decimal` macro) and PostgreSQL's JSON read
agree with the Python rule on every value, numbers and junk alike. Before, Python's
Decimal accepted '1_000', non-ASCII digits and tabs, which the warehouses read as null
(the event billed as 0); ClickHouse read '1.2.3' as 1.23 and '.' as 0; PostgreSQL
rounded the 13th decimal place where ClickHouse dropped it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhouse.catalog import PROPERTY_DECIMAL_SQL, parse_catalog
from billhouse.errors import EventError
from billhouse.events import Event, check_metric_field
from billhouse.ledger_connection import stop_ledger
from billhouse.dbt_runner import run_dbt
from billhouse.property_numbers import NUMERIC_TEXT_PATTERN, PROPERTY_MAGNITUDE_LIMIT, billed_number
from billhouse.settings import PROJECT_DIR, Settings
from billhouse.warehouse import open_warehouse

from .conftest import CATALOG

CATALOG_OBJ = parse_catalog(CATALOG)
SUM_METRIC = "storage_gb"  # sum_agg of properties.gb in the shared test catalog
AT = datetime(2026, 10, 5, tzinfo=timezone.utc)

JUNK = [".", "-.", "+", "e5", ".e1", "1.2.3", "1_000", "\u0661\u0662", "2\t", "\t2", "2\n", "inf", "NaN",
        "Infinity", "", " ", "0x10", "1e", "1e+", "1,5", "--1", "+-1", "1 2", "1e1.5", "\u00a02"]
NUMERIC_TEXT = [" 2 ", "  -3.5e2", "+7", ".5", "5.", "1E5", "1e-3", "00012", "-0", "1.0000000000009",
                "-1.0000000000009", "0.30000000000000004", "99999999999999999999999999"]

decimal_texts = st.decimals(
    min_value=-PROPERTY_MAGNITUDE_LIMIT + 1, max_value=PROPERTY_MAGNITUDE_LIMIT - 1,
    allow_nan=False, allow_infinity=False,
).map(str)
spaced = st.tuples(st.sampled_from(["", " ", "  "]), decimal_texts, st.sampled_from(["", " "])).map("".join)
values = st.one_of(
    st.integers(min_value=-10**25, max_value=10**25),
    decimal_texts,
    spaced,
    st.sampled_from(NUMERIC_TEXT + JUNK),
    # text a warehouse can store (ingestion refuses NUL and unpaired surrogates)
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=6),
    st.booleans(),
    st.none(),
    st.just([1]),
    st.just({"gb": 1}),
)
# a non-integer JSON number as a literal (ingestion stores them as strings; older
# stores and hand-written rows may hold them): up to 15 significant digits
json_number_literals = st.decimals(min_value=-10**9, max_value=10**9, places=5, allow_nan=False,
                                   allow_infinity=False).map(lambda d: format(d, "f"))


def _stored(value: Any) -> str:
    return json.dumps({"gb": value}, default=str)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Settings]]:
    stores = {
        "chdb": Settings(data_dir=Path(tmp_path_factory.mktemp("numbers-chdb"))),
        "postgres": Settings(data_dir=Path(tmp_path_factory.mktemp("numbers-pg")), warehouse_target="postgres"),
    }
    try:
        yield stores
    finally:
        stop_ledger(stores["postgres"])


def _load(stores: dict[str, Settings], properties: list[str]) -> None:
    """Replace both stores' events with one event per properties text, in order."""
    events = [Event(f"t{i:05d}", "sub", SUM_METRIC, AT, text) for i, text in enumerate(properties)]
    with open_warehouse(stores["chdb"]) as chdb:
        chdb.client.command("TRUNCATE TABLE billhouse_raw.events")
        chdb.append_events(events, AT)
    with open_warehouse(stores["postgres"]) as postgres:
        postgres.conn.execute("TRUNCATE TABLE billhouse_raw.events")
        postgres.append_events(events, AT)


def _decimals(rows: list[dict[str, Any]], column: str) -> list[Decimal | None]:
    return [None if row[column] is None else Decimal(row[column]) for row in rows]


def _read_back(stores: dict[str, Settings], properties: list[str]) -> dict[str, list[Decimal | None]]:
    """Each reading of properties.gb by the warehouses outside dbt, in order."""
    _load(stores, properties)
    with open_warehouse(stores["chdb"]) as chdb:
        rows = chdb.query(
            "SELECT toString(property_numbers['gb']) AS stored,"
            f" toString({PROPERTY_DECIMAL_SQL['clickhouse']('gb')}) AS json_read"
            " FROM billhouse_raw.events ORDER BY transaction_id"
        )
    readings = {"chdb stored": _decimals(rows, "stored"), "chdb custom-expression read": _decimals(rows, "json_read")}
    with open_warehouse(stores["postgres"]) as postgres:
        rows = postgres.query(
            f"SELECT cast({PROPERTY_DECIMAL_SQL['postgres']('gb')} as text) AS json_read"
            " FROM billhouse_raw.events ORDER BY transaction_id"
        )
    readings["postgres custom-expression read"] = _decimals(rows, "json_read")
    return readings


def _read_by_the_macros(stores: dict[str, Settings]) -> dict[str, list[Decimal | None]]:
    """properties.gb as the models read it (macros event_number and property_decimal)."""
    as_text = "{% if target.type == 'postgres' %}cast(VALUE as text){% else %}toString(VALUE){% endif %}"
    inline = (
        "select transaction_id, "
        + as_text.replace("VALUE", "{{ billhouse.event_number('events', \"'gb'\") }}") + " as stored, "
        + as_text.replace("VALUE", "{{ billhouse.property_decimal('events.properties', \"'gb'\") }}") + " as json_read"
        " from {{ ref('stg_billhouse__events') }} as events order by transaction_id"
    )
    readings = {}
    for name, settings in stores.items():
        with open_warehouse(settings):
            pass  # the raw tables exist
        run_dbt(settings, ["run", "--select", "stg_billhouse__events"])
        shown = run_dbt(settings, ["show", "--inline", inline, "--limit", "-1", "--output", "json"])
        # the preview is the output's last message: {"show": [rows]}, over several lines
        rows = json.loads(shown.output[shown.output.rindex("\n{\n") + 1:])["show"]
        readings[f"{name} event_number"] = _decimals(rows, "stored")
        readings[f"{name} property_decimal"] = _decimals(rows, "json_read")
    return readings


def _expected(properties: list[str]) -> list[Decimal | None]:
    return [billed_number(json.loads(text, parse_float=Decimal)["gb"]) for text in properties]


def _accepted(value: Any) -> bool:
    try:
        check_metric_field(0, SUM_METRIC, {"gb": value}, CATALOG_OBJ)
    except EventError:
        return False
    return True


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored_values=st.lists(values, min_size=20, max_size=60), literals=st.lists(json_number_literals, max_size=10))
def test_every_warehouse_reads_a_property_as_the_python_rule_does(
    stores: dict[str, Settings], stored_values: list[Any], literals: list[str]
) -> None:
    properties = [_stored(v) for v in stored_values] + ['{"gb": ' + literal + "}" for literal in literals]
    expected = _expected(properties)
    for reader, readings in _read_back(stores, properties).items():
        mismatches = [(p, e, r) for p, e, r in zip(properties, expected, readings) if e != r]
        assert not mismatches, f"{reader} reads differently from the rule: {mismatches[:5]}"


def test_what_ingestion_accepts_every_warehouse_bills_as_that_number(stores: dict[str, Settings]) -> None:
    candidates = NUMERIC_TEXT + JUNK + [7, -10**25, Decimal("1E+3"), Decimal("0.1"), "1e26", "-1e26", 10**26,
                                        True, None, [1]]
    accepted = [v for v in candidates if _accepted(v)]
    assert set(map(repr, accepted)) == set(map(repr, NUMERIC_TEXT + [7, -10**25, Decimal("1E+3"), Decimal("0.1")]))
    properties = [_stored(v) for v in accepted] + [_stored(v) for v in JUNK] + [_stored("1e26"), '{"gb": 1e30}']
    expected = [billed_number(v) for v in accepted] + [None] * (len(JUNK) + 2)
    assert None not in expected[: len(accepted)]
    readings = _read_back(stores, properties)
    readings.update(_read_by_the_macros(stores))  # the models' reads, through dbt
    for reader, read in readings.items():
        assert read == expected, reader


@pytest.mark.parametrize(
    "value, reason",
    [
        ("1_000", "must be a number or a numeric string"),
        ("\u0661\u0662", "must be a number or a numeric string"),
        ("2\t", "must be a number or a numeric string"),
        ("1.2.3", "must be a number or a numeric string"),
        (".", "must be a number or a numeric string"),
        ("NaN", "must be a number or a numeric string"),
        (True, "must be a number or a numeric string"),
        ("1e26", "must be below 10^26 in magnitude"),
        (-(10**26), "must be below 10^26 in magnitude"),
    ],
)
def test_ingestion_refuses_what_the_warehouses_would_not_read_naming_the_field(value: Any, reason: str) -> None:
    with pytest.raises(EventError) as refused:
        check_metric_field(3, SUM_METRIC, {"gb": value}, CATALOG_OBJ)
    assert "properties.gb" in str(refused.value) and reason in str(refused.value)


def test_the_macros_use_the_same_pattern_as_python() -> None:
    macros = (PROJECT_DIR / "macros" / "event_properties.sql").read_text()
    body = re.search(r"\{% macro numeric_text_pattern\(\) -%\}(.*?)\{%- endmacro %\}", macros, re.S)
    assert body is not None and body.group(1).strip() == NUMERIC_TEXT_PATTERN


def test_a_store_made_before_the_rule_changed_gets_it_for_new_rows(tmp_path: Path) -> None:
    """An older store's stored numbers used toDecimal256OrNull alone ('.' read as 0):
    opening it sets the current rule for rows inserted from then on; rows stored before
    keep their values until MATERIALIZE COLUMN (docs/operations.md)."""
    settings = Settings(data_dir=tmp_path)
    older_rule = (
        "CAST(arrayMap(kv -> (kv.1, toDecimal256OrNull(trimBoth(kv.2, '\" '), 12)),"
        " JSONExtractKeysAndValuesRaw(properties)), 'Map(String, Nullable(Decimal(76, 12)))')"
    )

    def numbers(warehouse: Any) -> list[str | None]:
        rows = warehouse.query(
            "SELECT toString(property_numbers['gb']) AS n FROM billhouse_raw.events ORDER BY transaction_id"
        )
        return [row["n"] for row in rows]

    with open_warehouse(settings) as warehouse:
        warehouse.client.command(
            "ALTER TABLE billhouse_raw.events MODIFY COLUMN property_numbers"
            f" Map(String, Nullable(Decimal(76, 12))) MATERIALIZED {older_rule}"
        )
        warehouse.append_events([Event("t1", "sub", SUM_METRIC, AT, '{"gb": "."}')], AT)
        assert numbers(warehouse) == ["0"]
    with open_warehouse(settings) as warehouse:  # opening it again sets the current rule
        warehouse.append_events([Event("t2", "sub", SUM_METRIC, AT, '{"gb": "."}')], AT)
        assert numbers(warehouse) == ["0", None]
        warehouse.client.command(
            "ALTER TABLE billhouse_raw.events MATERIALIZE COLUMN property_numbers SETTINGS mutations_sync = 1"
        )
        assert numbers(warehouse) == [None, None]
