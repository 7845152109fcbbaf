"""custom_agg expressions on generated cases: ClickHouse (chDB), PostgreSQL and an
independent Python reference compute the same value for every event.

Each example is a random expression over two event properties (present or missing,
from a few units to near 10^26): arithmetic, division and modulo (a zero divisor gives
no value), CAST to INT/SMALLINT/DECIMAL(p, s) (of a number or of a comparison), ROUND,
ABS, CEIL, FLOOR, SIGN, GREATEST, LEAST, COALESCE, NULLIF, IF and CASE, compiled as the
catalog compiles it and evaluated on both engines, with the value an event gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billhouse.catalog import PROPERTY_DECIMAL_SQL, PROPERTY_TEXT_SQL
from billhouse.custom_expression import compile_custom_expression
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings

INTEGER_RANGES = {"SMALLINT": (-(2**15), 2**15 - 1), "INT": (-(2**31), 2**31 - 1), "BIGINT": (-(2**63), 2**63 - 1)}
BOUND = Decimal(10) ** 26  # no value reaches it: null instead


def places(value: Decimal, count: int) -> Decimal:
    """``value`` rounded half away from zero to ``count`` places."""
    return value.quantize(Decimal(1).scaleb(-count), rounding=ROUND_HALF_UP)


def bounded(value: Decimal | None) -> Decimal | None:
    return value if value is not None and abs(value) < BOUND else None


# --- the reference ------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    sql: str

    def value(self, properties: dict[str, Decimal]) -> Decimal | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Property(Node):
    key: str

    def value(self, properties):
        return properties.get(self.key)


@dataclass(frozen=True)
class Number(Node):
    number: Decimal

    def value(self, properties):
        return self.number


@dataclass(frozen=True)
class Arithmetic(Node):
    op: str
    left: Node
    right: Node

    def value(self, properties):
        a, b = self.left.value(properties), self.right.value(properties)
        if a is None or b is None:
            return None
        if self.op in ("/", "%"):
            a, b = places(a, 24), places(b, 24)
            if b == 0:
                return None
            if self.op == "%":
                return a % b  # the dividend's sign, as both warehouses
            return bounded(places(a / b, 12))
        if self.op == "*":
            return bounded(places(a, 12) * places(b, 12))
        return bounded(a + b if self.op == "+" else a - b)


@dataclass(frozen=True)
class Function(Node):
    name: str
    args: tuple[Node, ...]

    def value(self, properties):
        values = [arg.value(properties) for arg in self.args]
        present = [v for v in values if v is not None]
        if self.name in ("GREATEST", "LEAST"):  # nulls are skipped, as both warehouses do
            return (max if self.name == "GREATEST" else min)(present) if present else None
        if self.name == "COALESCE":  # its values at 24 places, as IF's and CASE's
            return places(present[0], 24) if present else None
        if self.name == "NULLIF":
            return None if values[0] is not None and values[0] == values[1] else values[0]
        if values[0] is None:
            return None
        if self.name == "ABS":
            return abs(values[0])
        if self.name == "NEG":
            return -values[0]
        if self.name in ("CEIL", "FLOOR"):
            return values[0].to_integral_value(rounding=ROUND_CEILING if self.name == "CEIL" else ROUND_FLOOR)
        if self.name == "SIGN":
            return Decimal((values[0] > 0) - (values[0] < 0))
        if self.name == "ROUND":
            return values[0].quantize(Decimal(1).scaleb(-int(values[1])), rounding=ROUND_HALF_UP)
        raise AssertionError(self.name)


@dataclass(frozen=True)
class Cast(Node):
    operand: Node
    type_name: str
    precision: int = 0
    scale: int = 0

    def value(self, properties):
        x = self.operand.value(properties)
        if x is None:
            return None
        rounded = x.quantize(Decimal(1).scaleb(-self.scale), rounding=ROUND_HALF_UP)
        if self.type_name in INTEGER_RANGES:
            low, high = INTEGER_RANGES[self.type_name]
            return rounded if low <= rounded <= high else None
        return rounded if abs(rounded) < min(Decimal(10) ** (self.precision - self.scale), BOUND) else None


@dataclass(frozen=True)
class TruthCast(Node):
    left: Node
    right: Node

    def value(self, properties):
        a, b = self.left.value(properties), self.right.value(properties)
        return None if a is None or b is None else Decimal(int(a > b))


@dataclass(frozen=True)
class Conditional(Node):
    left: Node
    right: Node
    then: Node
    otherwise: Node

    def value(self, properties):
        a, b = self.left.value(properties), self.right.value(properties)
        chosen = self.then if a is not None and b is not None and a > b else self.otherwise
        value = chosen.value(properties)
        return None if value is None else places(value, 24)


# --- generated expressions ------------------------------------------------------------


decimals = st.one_of(
    st.decimals(min_value=-10_000, max_value=10_000, places=3, allow_nan=False, allow_infinity=False),
    # what a property may hold: below 10^26, 12 places
    st.decimals(min_value=-BOUND + 1, max_value=BOUND - 1, places=12, allow_nan=False, allow_infinity=False),
)
leaves = st.one_of(
    st.sampled_from(["a", "b"]).map(lambda key: Property(f"properties.{key}", key)),
    decimals.map(lambda d: Number(f"({d})" if d < 0 else str(d), d)),
    # integers: ClickHouse reads up to nine digits as an integer type, more as a decimal
    st.integers(-(10**15), 10**15).map(lambda i: Number(f"({i})" if i < 0 else str(i), Decimal(i))),
)


def _compound(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    def arithmetic(op: str, left: Node, right: Node) -> Node:
        return Arithmetic(f"({left.sql} {op} {right.sql})", op, left, right)

    def cast(operand: Node, type_name: str, precision: int, scale: int) -> Node:
        if type_name in INTEGER_RANGES:
            return Cast(f"CAST({operand.sql} AS {type_name})", operand, type_name)
        scale = min(scale, precision)
        return Cast(f"CAST({operand.sql} AS DECIMAL({precision}, {scale}))", operand, "DECIMAL", precision, scale)

    def function(name: str, *args: Node) -> Node:
        shown = "-" if name == "NEG" else name
        return Function(f"{shown}({', '.join(a.sql for a in args)})", name, args)

    def rounded(operand: Node, places: int) -> Node:
        return Function(f"ROUND({operand.sql}, {places})", "ROUND", (operand, Number(str(places), Decimal(places))))

    def truth_cast(left: Node, right: Node, type_name: str) -> Node:
        return TruthCast(f"CAST(({left.sql} > {right.sql}) AS {type_name})", left, right)

    def conditional(left: Node, right: Node, then: Node, otherwise: Node) -> Node:
        return Conditional(f"IF({left.sql} > {right.sql}, {then.sql}, {otherwise.sql})", left, right, then, otherwise)

    def case(left: Node, right: Node, then: Node, otherwise: Node) -> Node:
        sql = f"CASE WHEN {left.sql} > {right.sql} THEN {then.sql} ELSE {otherwise.sql} END"
        return Conditional(sql, left, right, then, otherwise)

    return st.one_of(
        st.builds(arithmetic, st.sampled_from(["+", "-", "*", "/", "%"]), children, children),
        st.builds(cast, children, st.sampled_from(["INT", "SMALLINT", "BIGINT", "DECIMAL"]),
                  st.integers(3, 12), st.integers(0, 4)),
        st.builds(function, st.sampled_from(["ABS", "NEG", "CEIL", "FLOOR", "SIGN"]), children),
        st.builds(function, st.sampled_from(["GREATEST", "LEAST", "COALESCE", "NULLIF"]), children, children),
        st.builds(rounded, children, st.integers(0, 3)),
        st.builds(conditional, children, children, children, children),
        st.builds(case, children, children, children, children),
        st.builds(truth_cast, children, children, st.sampled_from(["INT", "SMALLINT", "DECIMAL(3, 1)"])),
    )


expressions = st.recursive(leaves, _compound, max_leaves=8)
property_values = st.dictionaries(st.sampled_from(["a", "b"]), decimals)


# --- the engines ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings_ = Settings(data_dir=Path(tmp_path_factory.mktemp("custom-expression-pg")))
    try:
        with ledger(settings_) as conn:
            yield conn
    finally:
        stop_ledger(settings_)


def _compiled(expression: str, dialect: str) -> str:
    return compile_custom_expression(
        "generated", expression, dialect,
        property_sql=PROPERTY_DECIMAL_SQL[dialect], property_text_sql=PROPERTY_TEXT_SQL[dialect],
        timestamp_sql="event_at",
    )


def _clickhouse_value(expression: str, properties: str) -> Decimal | None:
    import chdb

    # a column, as in a close (a constant would be folded, branches CASE never takes too)
    sql = (f"SELECT toString(({_compiled(expression, 'clickhouse')}))"
           f" FROM (SELECT materialize({_quoted(properties)}) AS properties)"
           " SETTINGS join_use_nulls = 1")
    text = chdb.query(sql, "TSVRaw").data().strip()
    return None if text in ("\\N", "") else Decimal(text)


def _postgres_value(conn: Any, expression: str, properties: str) -> Decimal | None:
    sql = f"SELECT ({_compiled(expression, 'postgres')})::text FROM (SELECT {_quoted(properties)}::text AS properties) AS e"
    (text,) = conn.execute(sql).fetchone()
    return None if text is None else Decimal(text)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expression=expressions, values=property_values)
def test_both_warehouses_and_the_reference_agree_on_every_generated_expression(
    postgres: Any, expression: Node, values: dict[str, Decimal]
) -> None:
    with localcontext() as exact:
        exact.prec = 200
        value = expression.value(values)
        expected = bounded(places(value, 12)) if value is not None else None
    properties = json.dumps({key: str(value) for key, value in values.items()})
    clickhouse = _clickhouse_value(expression.sql, properties)
    postgresql = _postgres_value(postgres, expression.sql, properties)
    assert (clickhouse, postgresql) == (expected, expected), expression.sql
