"""custom_agg expressions: allowed scalar SQL transpiles per dialect; everything else is refused."""

from __future__ import annotations

import pytest

from billhouse.custom_expression import (
    CustomExpressionError,
    compile_custom_expression,
)

CH_PROP = "toDecimal128OrNull(JSONExtractRaw(properties, '{}'), 12)"


def ch(expression: str, **kw: object) -> str:
    return compile_custom_expression(
        "storage", expression, "clickhouse", property_sql=CH_PROP.format, **kw
    )


def pg(expression: str, **kw: object) -> str:
    return compile_custom_expression(
        "storage",
        expression,
        "postgres",
        property_sql=lambda k: f"CAST(properties ->> '{k}' AS NUMERIC)",
        **kw,
    )


def bounded(sql: str, dialect: str) -> str:
    """What the compiler makes of a sum, product or quotient: null from 10^26 on."""
    nullif, decimal = ("nullIf", "Decimal") if dialect == "clickhouse" else ("NULLIF", "DECIMAL")
    low, high = (f"CAST('{sign}100000000000000000000000000' AS {decimal}(76, 0))" for sign in ("-", ""))
    return f"{nullif}({nullif}(LEAST(GREATEST({sql}, {low}), {high}), {high}), {low})"


def number(text: str, dialect: str) -> str:
    """A number literal as the compiler writes it: a decimal of its own places."""
    places = text.split(".")[1] if "." in text else ""
    return f"CAST('{text}' AS {'Decimal' if dialect == 'clickhouse' else 'DECIMAL'}(76, {len(places)}))"


def value(sql: str, dialect: str) -> str:
    """An event's value: rounded to 12 places, null from 10^26 on (the outermost
    operation's own bound is left out: this one covers it)."""
    return bounded(f"ROUND({sql}, 12)", dialect)


def test_property_reference_goes_through_the_hook_in_both_dialects():
    assert ch("properties.storage_gb * 2") == value(
        f"(toDecimal128OrNull(JSONExtractRaw(properties, 'storage_gb'), 12)) * {number('2', 'clickhouse')}", "clickhouse"
    )
    assert pg("properties.storage_gb * 2") == value(
        f"(CAST(properties ->> 'storage_gb' AS NUMERIC)) * {number('2', 'postgres')}", "postgres"
    )


def test_fractional_literals_become_decimals_never_float():
    assert ch("properties.gb * 1.5") == value(
        "(toDecimal128OrNull(JSONExtractRaw(properties, 'gb'), 12))"
        " * CAST('1.5' AS Decimal(76, 1))", "clickhouse"
    )
    assert pg("0.25e1 + 1") == value(f"CAST('2.5' AS DECIMAL(76, 1)) + {number('1', 'postgres')}", "postgres")
    # an integer of more digits than an Int64 would be a Float64 to ClickHouse (and two
    # of ten digits would multiply past 2^64)
    assert ch("properties.gb * 1234567890123456789012") == value(
        "(toDecimal128OrNull(JSONExtractRaw(properties, 'gb'), 12))"
        " * CAST('1234567890123456789012' AS Decimal(76, 0))", "clickhouse"
    )


def test_division_is_not_cast_to_float_and_rounds_to_12_places():
    # (a quotient is the event's value rounded already)
    assert pg("properties.a / 3") == bounded(
        f"ROUND(CAST((CAST(properties ->> 'a' AS NUMERIC)) AS DECIMAL(76, 24)) / {number('3', 'postgres')}, 12)", "postgres"
    )
    assert "DOUBLE" not in pg("properties.a / properties.b").upper()
    assert "Float" not in ch("properties.a / properties.b")


def test_if_case_and_functions_transpile():
    expr = "IF(properties.cpu > 2, GREATEST(properties.cpu, 4), ROUND(properties.cpu, 2))"
    assert ch(expr) == value(
        f"CASE WHEN (toDecimal128OrNull(JSONExtractRaw(properties, 'cpu'), 12)) > {number('2', 'clickhouse')} "
        "THEN CAST(GREATEST((toDecimal128OrNull(JSONExtractRaw(properties, 'cpu'), 12)), "
        f"{number('4', 'clickhouse')}) AS Nullable(Decimal(76, 24))) "
        "ELSE CAST(ROUND((toDecimal128OrNull(JSONExtractRaw(properties, 'cpu'), 12)), 2) AS Nullable(Decimal(76, 24))) END",
        "clickhouse",
    )
    # ClickHouse chooses between decimals of different scales not at all, and between a
    # decimal and an integer as a Float64: every value at 24 places (not 1 or 0 alone)
    assert ch("COALESCE(properties.a, 0.5)") == value(
        "COALESCE(CAST((toDecimal128OrNull(JSONExtractRaw(properties, 'a'), 12)) AS Nullable(Decimal(76, 24))), "
        "CAST(CAST('0.5' AS Decimal(76, 1)) AS Nullable(Decimal(76, 24))))", "clickhouse"
    )
    total = bounded(
        "COALESCE(CAST((CAST(properties ->> 'a' AS NUMERIC)) AS DECIMAL(76, 24)), "
        f"CAST({number('0', 'postgres')} AS DECIMAL(76, 24))) + "
        "ABS(CEIL((CAST(properties ->> 'b' AS NUMERIC))))", "postgres"
    )
    assert pg("COALESCE(properties.a, 0) + ABS(CEIL(properties.b)) - FLOOR(1)") == value(
        f"{total} - FLOOR({number('1', 'postgres')})", "postgres"
    )
    assert pg("LEAST(properties.a, 10)") == value(
        f"LEAST((CAST(properties ->> 'a' AS NUMERIC)), {number('10', 'postgres')})", "postgres"
    )


def test_a_cast_of_a_missing_property_is_null_in_clickhouse_not_an_error():
    assert "AS Nullable(Decimal(38, 12)))" in ch("CAST(properties.a AS DECIMAL(38, 12))")
    # an integer type is computed as a decimal of no places: ClickHouse's integers wrap
    assert "AS Nullable(Decimal(76, 0)))" in ch("properties.a::bigint")


def test_a_cast_rounds_to_its_scale_and_is_null_out_of_its_range():
    # PostgreSQL's cast rounds and ClickHouse's truncates; both raise out of range
    # the cast's operand is clamped to the type's range too: ClickHouse may compute the
    # cast where the CASE does not take it (a folded constant), and raise there
    assert pg("CAST(properties.a AS DECIMAL(5, 2))") == value(
        "CASE WHEN ABS((CAST(properties ->> 'a' AS NUMERIC))) < CAST('999.995' AS DECIMAL(76, 3))"
        " THEN CAST(ROUND(LEAST(GREATEST((CAST(properties ->> 'a' AS NUMERIC)), CAST('-999.99' AS DECIMAL(76, 2))),"
        " CAST('999.99' AS DECIMAL(76, 2))), 2) AS DECIMAL(5, 2)) END", "postgres"
    )
    # no cast yields 10^26 or more, whatever its type holds
    assert "CAST('99999999999999999999999999.5' AS DECIMAL(76, 1))" in pg("CAST(properties.a AS DECIMAL(38, 0))")
    assert "ROUND(" in ch("CAST(properties.a AS SMALLINT)") and "'32767.5'" in ch("CAST(properties.a AS SMALLINT)")
    with pytest.raises(CustomExpressionError, match="numbers only"):
        ch("CAST(timestamp AS BIGINT)")
    with pytest.raises(CustomExpressionError, match="precision"):
        ch("CAST(properties.a AS DECIMAL(2, 5))")


def test_property_used_as_text_goes_through_the_text_hook():
    out = ch(
        "CASE WHEN properties.region = 'eu' THEN 1 ELSE 0 END",
        property_text_sql=lambda k: f"JSONExtractString(properties, '{k}')",
    )
    assert out == value(
        f"CASE WHEN (JSONExtractString(properties, 'region')) = 'eu' THEN {number('1', 'clickhouse')} "
        f"ELSE {number('0', 'clickhouse')} END", "clickhouse"
    )
    assert pg("LENGTH(LOWER(properties.name))") == value(
        "CAST(LENGTH(LOWER(((properties ->> 'name')))) AS DECIMAL(76, 0))", "postgres"
    )


def test_quoted_property_keys_and_timestamp_field():
    one, zero = (number(n, "postgres") for n in ("1", "0"))
    assert pg('properties."gb-month" + 1') == value(
        f"(CAST(properties ->> 'gb-month' AS NUMERIC)) + {one}", "postgres"
    )
    assert pg("CASE WHEN timestamp >= '2026-01-01' THEN 1 ELSE 0 END") == value(
        f"CASE WHEN \"timestamp\" >= '2026-01-01' THEN {one} ELSE {zero} END", "postgres"
    )
    assert ch("IF(timestamp < '2026-01-01', 1, 2)", timestamp_sql="ts") == value(
        f"CASE WHEN ts < '2026-01-01' THEN {number('1', 'clickhouse')} ELSE {number('2', 'clickhouse')} END",
        "clickhouse",
    )


def test_compiled_clickhouse_expression_runs_and_stays_decimal():
    chdb = pytest.importorskip("chdb")
    sql = compile_custom_expression(
        "storage", "properties.gb * 1.5 + IF(properties.region = 'eu', 1, 0)", "clickhouse"
    )
    out = chdb.query(
        f"SELECT {sql} AS v, toTypeName(v) FROM (SELECT "
        "'{\"gb\": \"10.5\", \"region\": \"eu\"}' AS properties)",
        "TSV",
    ).data()
    value, type_name = out.strip().split("\t")
    assert value.rstrip("0") == "16.75"
    assert "Decimal" in type_name and "Float" not in type_name


@pytest.mark.parametrize(
    ("expression", "reason", "fragment"),
    [
        ("(SELECT 1)", "subqueries are not allowed", "SELECT 1"),
        ("(select max(x) from events)", "subqueries are not allowed", "select max(x)"),
        ("properties.a IN (SELECT 1)", "subqueries are not allowed", "SELECT 1"),
        ("numbers(10)", "unknown function 'numbers'", "numbers(10)"),
        ("file('x')", "unknown function 'file'", "file('x')"),
        ("url('http://evil/x')", "unknown function 'url'", "url('http://evil/x')"),
        ("1; DROP TABLE events", "single expression", "DROP TABLE events"),
        ("DROP TABLE events", "not allowed", "DROP TABLE events"),
        ("sleep(3)", "unknown function 'sleep'", "sleep(3)"),
        ("sum(x)", "aggregate functions are not allowed", "SUM(x)"),
        ("count(*)", "aggregate functions are not allowed", "COUNT(*)"),
        ("properties.a SETTINGS max_threads=1", "SETTINGS", "SETTINGS max_threads=1"),
        ("SET max_threads = 1", "SET statements are not allowed", "SET max_threads"),
        ("row_number() OVER ()", "window functions are not allowed", "OVER"),
        ("sqrt(properties.a)", "function 'SQRT' is not allowed", "SQRT"),
        ("x + 1", "unknown identifier", "x"),
        ("events.amount", "unknown identifier", "events.amount"),
        ("properties.a.b", "nested keys", "properties.a.b"),
        ("properties.a AS total", "aliases are not allowed", "AS total"),
        ("CAST(properties.a AS DOUBLE)", "CAST is only allowed", "DOUBLE"),
        ("properties.\"it's\"", "property keys must match", "it's"),
        ("properties.a +", "cannot parse", "+"),
        ("?", "placeholders", "?"),
        ("properties.a * 100000000000000000000000000", "below 10^26", "100000000000000000000000000"),
        ("properties.a * 1e26", "below 10^26", "1e26"),
        ("properties.a * 0.0000000000001", "at most 12 decimal places", "0.0000000000001"),
        # kinds: each would raise in the warehouse at every close
        ("properties.a + 'x'", "'x' is text", "properties.a + 'x'"),
        ("properties.a > 'abc'", "operands of different kinds", "properties.a > 'abc'"),
        ("timestamp + 1", "timestamp", "timestamp + 1"),
        ("properties.a > 1", "the expression is a condition", "properties.a > 1"),
        ("LOWER(properties.region)", "the expression is text", "LOWER(properties.region)"),
        ("IF(properties.a, 1, 0)", "a condition is needed where properties.a is a number", "properties.a"),
        ("IF(properties.a > 1, 'x', 0)", "operands of different kinds", "'x'"),
        ("(properties.a > 1) * 2", "a number is needed", "properties.a > 1"),
        ("LENGTH(properties.a + 1)", "text is needed", "LENGTH"),
        ("", "empty expression", ""),
    ],
)
def test_rejected_expressions_name_the_metric_and_the_offending_part(
    expression, reason, fragment
):
    for dialect in ("clickhouse", "postgres"):
        with pytest.raises(CustomExpressionError) as info:
            compile_custom_expression("storage_gb_hours", expression, dialect)
        message = str(info.value)
        assert "storage_gb_hours" in message
        assert reason in message
        assert fragment in info.value.fragment
        assert info.value.metric_code == "storage_gb_hours"


def test_string_literals_may_contain_sql_keywords():
    assert "CASE WHEN ((properties ->> 'k')) = 'select * from t; drop' THEN" in pg(
        "CASE WHEN properties.k = 'select * from t; drop' THEN 1 ELSE 0 END"
    )


def test_unsupported_dialect_is_a_programming_error():
    with pytest.raises(ValueError):
        compile_custom_expression("m", "1", "bigquery")


@pytest.mark.parametrize("target", ["chdb", "postgres"])
def test_both_warehouses_compute_divisions_and_casts_alike_and_no_event_fails_the_close(target: str) -> None:
    """A zero divisor or a value its cast cannot hold used to raise in the warehouse and
    fail the whole close; such an event now has no value (the metric's sum skips it).
    A cast rounds half away from zero on both (ClickHouse's own cast truncates)."""
    from billhouse.catalog import parse_instant
    from billhouse.simulate import Scenario, invoices_as_json, simulate

    expressions = {
        "rate": "properties.gb / properties.hours + MOD(properties.gb, properties.hours)",
        "rounded": "CAST(properties.v AS INT) + CAST(properties.v AS DECIMAL(4, 1))",
        "product": "properties.a * properties.b",
        "flag": "CAST((properties.v > 1) AS INT) + CAST(properties.v > 1 AND properties.v < 3 AS SMALLINT)",
        # failed every ClickHouse close (IF between decimals of different scales)
        "choice": "IF(properties.v > 1, properties.v * 1.5, 0.25)",
        "case": "CASE WHEN properties.v > 1 THEN 1 ELSE 0.5 END",  # an integer, then a decimal
        # ClickHouse's Decimal256 wrapped to a wrong number past 76 digits, and its BIGINTs
        # past 2^63
        "wide": "properties.a * properties.a * properties.a * properties.a * properties.a",
        "big": "CAST(properties.n AS BIGINT) + CAST(properties.n AS BIGINT)",
    }
    rates = {"wide": "0.000001", "big": "0.000001"}
    document = {
        "as_of": "2026-12-01T00:00:00Z",
        "billable_metrics": [{"code": code, "aggregation_type": "custom_agg", "expression": expression}
                             for code, expression in expressions.items()],
        "plans": [{"code": code, "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
                   "charges": [{"billable_metric_code": code, "charge_model": "standard",
                                "properties": {"amount": rates.get(code, "1")}}]} for code in expressions],
        "customers": [{"external_id": f"cus_{code}", "currency": "EUR"} for code in expressions],
        "subscriptions": [{"external_id": code, "external_customer_id": f"cus_{code}", "plan_code": code,
                           "subscription_at": "2026-11-01T00:00:00Z"} for code in expressions],
    }

    def event(n: int, code: str, properties: dict) -> dict:
        return {"transaction_id": f"{code}-{n}", "external_subscription_id": code, "code": code,
                "timestamp": f"2026-11-0{n + 2}T00:00:00Z", "properties": properties}

    events = [
        event(0, "rate", {"gb": 10, "hours": 4}),  # 10 / 4 + 10 % 4 = 2.5 + 2
        event(1, "rate", {"gb": 3, "hours": 0}),  # no value
        event(0, "rounded", {"v": "2.5"}),  # 3 + 2.5 (truncated: 2 + 2.5)
        event(1, "rounded", {"v": "-2.25"}),  # -2 + -2.3 (truncated: -2 + -2.2)
        event(2, "rounded", {"v": 100000}),  # DECIMAL(4, 1) holds below 1000: no value
        event(0, "product", {"a": 2, "b": 3}),
        event(1, "product", {"a": "0.0000001", "b": "0.000005"}),  # 5e-13: 1e-12 (truncated: 0)
        event(0, "flag", {"v": 2}),  # 1 + 1
        event(1, "flag", {"v": 5}),  # 1 + 0
        event(2, "flag", {"v": 0}),  # 0 + 0
        event(0, "choice", {"v": "2"}),  # 3
        event(1, "choice", {"v": "0"}),  # 0.25
        event(0, "case", {"v": "2"}),  # 1
        event(1, "case", {"v": "0"}),  # 0.5
        event(0, "wide", {"a": "3000.5"}),  # 3000.5^5
        event(1, "wide", {"a": "1000000"}),  # 10^30: past 10^26, no value
        event(0, "big", {"n": "9000000000000000000"}),  # 1.8 * 10^19
    ]
    invoices = invoices_as_json(simulate(Scenario("arithmetic.yml", parse_instant(document["as_of"]), document, events),
                                         warehouse_target=target))["invoices"]
    units = {fee["external_subscription_id"]: fee["units"]
             for invoice in invoices for fee in invoice["fees"] if fee["kind"] == "charge"}
    assert units == {"rate": "4.5", "rounded": "1.2", "product": "6.000000000001", "flag": "3",
                     "choice": "3.25", "case": "1.5", "wide": "243202567511250937.53125", "big": "18000000000000000000"}
