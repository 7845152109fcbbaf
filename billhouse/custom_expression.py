"""Validate and transpile `custom_agg` expressions (one scalar SQL expression per event).

A `custom_agg` metric's `expression` is evaluated once per event and the results are
summed by the metric. It is written in billhouse's neutral SQL (sqlglot's default
dialect) and compiled to the warehouse dialect ("clickhouse" or "postgres").

Fields an expression may reference:
  * ``properties.<key>`` -- an event property, read as a decimal through the caller's
    ``property_sql`` hook (as text through ``property_text_sql`` where the expression
    uses it as text: LOWER/UPPER/LENGTH argument, or compared with =, <>, IN to a
    string literal or LOWER/UPPER). ``<key>`` matches ``[A-Za-z0-9_-]+``; quote keys that are not
    plain identifiers: ``properties."gb-month"``. Nested keys (``properties.a.b``) are
    not supported.
  * ``timestamp`` -- the event's timestamp (rendered through ``timestamp_sql``).

Allowed syntax (everything else is rejected):
  * literals: numbers, 'strings', TRUE/FALSE, NULL; parentheses; unary minus;
  * arithmetic ``+ - * / %``; comparisons ``= <> != < <= > >=``; ``AND OR NOT``;
    ``IS [NOT] NULL``; ``[NOT] IN (<values>)``; ``BETWEEN``;
  * ``CASE WHEN ... THEN ... ELSE ... END`` and ``IF(cond, a, b)``;
  * functions: COALESCE, NULLIF, ROUND, CEIL/CEILING, FLOOR, ABS, SIGN, LEAST,
    GREATEST, MOD, LENGTH, LOWER, UPPER;
  * ``CAST(x AS t)`` / ``x::t`` with t in DECIMAL/NUMERIC[(p, s)], INT/INTEGER, BIGINT,
    SMALLINT (no float types: money and units never pass through float).

Rejected with `CustomExpressionError` (naming the metric and the offending fragment):
parse errors, several statements, subqueries/SELECT, FROM/table references, table
functions and any unknown function (numbers, file, url, sleep, ...), DDL/DML, SET and
SETTINGS, aggregate and window functions (the metric itself sums), aliases,
placeholders/parameters, unknown identifiers.

Decimal safety: number literals are compiled to ``CAST('<digits>' AS DECIMAL(76,
<scale>))`` so that ClickHouse never sees a Float64 literal nor computes in Decimal128
(which wraps past 38 digits), and PostgreSQL never in 32-bit integers; ``/`` is a
decimal division (no float cast), rounded half away from zero to 12 places from a
24-place dividend, and ``%`` takes both operands at 24 places, so both
warehouses compute the same quotient and remainder. A divisor (of ``/``, ``%`` or MOD)
that is not a non-zero number is wrapped in ``NULLIF(..., 0)``: an event dividing by
zero has no value (the metric's sum skips it) instead of failing the close. ``CAST``
rounds half away from zero to the type's scale and is null out of the type's range.

Bounds: a number literal is below 10^26 with at most 12 places, as a property value;
every sum, difference, product, quotient and cast -- and the event's value, rounded to
12 places -- is null from 10^26 on (no property value reaches it either), and a
product's factors are taken at 12 places, so ClickHouse's Decimal256 never passes its
76 digits (where it wraps silently). The values an IF, CASE or COALESCE chooses from
are taken as DECIMAL(76, 24) (ClickHouse refuses to choose between decimal scales).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from billhouse.property_numbers import PROPERTY_DECIMAL_PLACES, PROPERTY_INTEGER_DIGITS

__all__ = [
    "ALLOWED_FUNCTIONS",
    "ALLOWED_CAST_TYPES",
    "SUPPORTED_DIALECTS",
    "CustomExpressionError",
    "compile_custom_expression",
    "default_property_sql",
    "default_property_text_sql",
]

SUPPORTED_DIALECTS: frozenset[str] = frozenset({"clickhouse", "postgres"})

#: Function names a user may call (as written in the expression, case-insensitive).
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "if", "coalesce", "nullif", "round", "ceil", "ceiling", "floor", "abs", "sign",
        "least", "greatest", "mod", "length", "lower", "upper", "cast",
    }
)  # fmt: skip

ALLOWED_CAST_TYPES: frozenset[exp.DataType.Type] = frozenset(
    {
        exp.DataType.Type.DECIMAL,
        exp.DataType.Type.INT,
        exp.DataType.Type.BIGINT,
        exp.DataType.Type.SMALLINT,
    }
)

# sqlglot node classes that may appear in a validated expression.
_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Neg, exp.Not,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod,
    exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE,
    exp.And, exp.Or, exp.Is, exp.In, exp.Between,
    exp.Case, exp.If, exp.Coalesce, exp.Nullif,
    exp.Round, exp.Ceil, exp.Floor, exp.Abs, exp.Sign, exp.Least, exp.Greatest,
    exp.Length, exp.Lower, exp.Upper,
    exp.Cast, exp.DataType, exp.DataTypeParam,
    exp.Column, exp.Identifier,
)  # fmt: skip

_STATEMENT_NODES: tuple[type[exp.Expression], ...] = (
    exp.Create, exp.Drop, exp.Insert, exp.Update, exp.Delete, exp.Alter, exp.Command,
    exp.Set, exp.Merge, exp.TruncateTable, exp.Use, exp.Describe,
)  # fmt: skip

# Keywords whose mere presence (outside string literals) means "not a scalar expression".
_FORBIDDEN_KEYWORDS: dict[str, str] = {
    "SELECT": "subqueries are not allowed",
    "FROM": "table references are not allowed",
    "JOIN": "table references are not allowed",
    "WITH": "subqueries are not allowed",
    "UNION": "subqueries are not allowed",
    "SETTINGS": "SETTINGS clauses are not allowed",
    "FORMAT": "FORMAT clauses are not allowed",
    "SET": "SET statements are not allowed",
    "OVER": "window functions are not allowed",
    "INTO": "DDL/DML statements are not allowed",
    "DROP": "DDL/DML statements are not allowed",
    "CREATE": "DDL/DML statements are not allowed",
    "INSERT": "DDL/DML statements are not allowed",
    "UPDATE": "DDL/DML statements are not allowed",
    "DELETE": "DDL/DML statements are not allowed",
    "ALTER": "DDL/DML statements are not allowed",
    "TRUNCATE": "DDL/DML statements are not allowed",
    "GRANT": "DDL/DML statements are not allowed",
}

# Words that may legitimately precede "(" without being a function call.
_NON_FUNCTION_WORDS: frozenset[str] = frozenset(
    {"in", "and", "or", "not", "when", "then", "else", "case", "between", "is",
     "decimal", "numeric", "int", "integer", "bigint", "smallint"}
)  # fmt: skip

# Functions sqlglot knows: left to tree validation for a precise reason (aggregate,
# window, not allowed); anything else followed by "(" is rejected as unknown up front.
_KNOWN_FUNCTIONS: frozenset[str] = frozenset(sqlglot.parser.Parser.FUNCTIONS)

_PROPERTY_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_PLACEHOLDER = "__bh_ref_{}__"


class CustomExpressionError(ValueError):
    """A custom_agg expression was rejected; names the metric and the offending part."""

    def __init__(self, metric_code: str, fragment: str, reason: str) -> None:
        self.metric_code = metric_code
        self.fragment = fragment
        self.reason = reason
        super().__init__(
            f"custom_agg metric '{metric_code}': {reason}: {fragment!r}"
        )


def default_property_sql(dialect: str) -> Callable[[str], str]:
    """A reasonable decimal `property_sql` hook for tests and the simulator.

    Assumes the event row has a JSON text column ``properties`` (jsonb in Postgres).
    """
    if dialect == "clickhouse":
        return lambda k: (
            f"toDecimal128OrNull(JSONExtractString(properties, '{k}'), 12)"
        )
    if dialect == "postgres":
        return lambda k: f"CAST((properties ->> '{k}') AS NUMERIC(38, 12))"
    raise ValueError(f"unsupported dialect {dialect!r}")


def default_property_text_sql(dialect: str) -> Callable[[str], str]:
    """A `property_text_sql` hook reading a property as text (same assumptions)."""
    if dialect == "clickhouse":
        return lambda k: f"JSONExtractString(properties, '{k}')"
    if dialect == "postgres":
        return lambda k: f"(properties ->> '{k}')"
    raise ValueError(f"unsupported dialect {dialect!r}")


def _is_text_context(col: exp.Column) -> bool:
    """A property is read as text when used by a string function or compared to text."""
    parent = col.parent
    if isinstance(parent, (exp.Lower, exp.Upper, exp.Length)):
        return True
    if isinstance(parent, (exp.EQ, exp.NEQ, exp.In)):
        others = [c for c in parent.iter_expressions() if c is not col]
        return any(
            (isinstance(o, exp.Literal) and o.is_string)
            or isinstance(o, (exp.Lower, exp.Upper))
            for o in others
        )
    return False


def compile_custom_expression(
    metric_code: str,
    expression: str,
    dialect: str,
    property_sql: Callable[[str], str] | None = None,
    timestamp_sql: str | None = None,
    property_text_sql: Callable[[str], str] | None = None,
) -> str:
    """Validate ``expression`` and return it as SQL for ``dialect``.

    ``property_sql(key)`` returns the warehouse SQL that reads property ``key`` as a
    decimal (default: `default_property_sql`); its output is inserted verbatim, in
    parentheses. A property used as text -- the argument of LOWER/UPPER/LENGTH, or an
    operand of =, <>, IN next to a string literal or LOWER/UPPER -- goes through
    ``property_text_sql`` instead (default: `default_property_text_sql`).
    ``timestamp_sql`` replaces the ``timestamp`` field (default: the dialect's quoted
    ``timestamp`` column). Raises `CustomExpressionError`.
    """
    if dialect not in SUPPORTED_DIALECTS:
        raise ValueError(f"unsupported dialect {dialect!r}")
    if property_sql is None:
        property_sql = default_property_sql(dialect)
    if property_text_sql is None:
        property_text_sql = default_property_text_sql(dialect)
    if not expression or not expression.strip():
        raise CustomExpressionError(metric_code, expression or "", "empty expression")

    _scan_tokens(metric_code, expression)
    tree = _parse_single(metric_code, expression)
    _validate(metric_code, tree)
    _check_kinds(metric_code, tree)

    for conditional in tree.find_all(exp.If, exp.Case, exp.Coalesce):
        if isinstance(conditional, exp.If) and isinstance(conditional.parent, exp.Case):
            continue  # a WHEN ... THEN: its CASE takes all its values alike
        branches = _branches(conditional)
        if any(_kind(metric_code, b) == NUMBER for b in branches) and not all(map(_is_integer_literal, branches)):
            conditional.meta["numeric"] = True

    # Rewrite field references into placeholders, then literals into decimals.
    replacements: dict[str, str] = {}

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            name = _PLACEHOLDER.format(len(replacements))
            if node.table:
                hook = property_text_sql if _is_text_context(node) else property_sql
                replacements[name] = f"({hook(node.name)})"
            else:
                replacements[name] = timestamp_sql or exp.to_identifier(
                    "timestamp", quoted=True
                ).sql(dialect=dialect)
            return exp.column(name)
        if isinstance(node, exp.Literal) and not node.is_string and not _is_parameter(node):
            return _decimal_literal(node)
        if isinstance(node, exp.Div):
            node.set("typed", True)  # plain '/', never a float cast
            node.set("safe", False)
        if isinstance(node, exp.DataType):
            node.set("nullable", False)
        if isinstance(node, exp.Cast):
            node.meta["written"] = True  # the user's, not a literal's CAST made here
        return node

    tree = tree.transform(rewrite, copy=True)
    # innermost first: a replaced node's operands may hold another one
    for node in reversed(list(tree.find_all(*_REWRITTEN_NODES))):
        replacement = _decimal_safe(node)
        if replacement is None:
            continue
        if node is tree:
            tree = replacement
        else:
            node.replace(replacement)
    # the event's value, as the metric sums it (a number: _check_kinds); its bound makes
    # the outermost operation's redundant (rounding cannot bring a value back in range)
    value = tree.meta.get("bounded", tree)
    if not value.meta.get("places") == VALUE_PLACES:  # a quotient is rounded already
        value = exp.Round(this=value, decimals=exp.Literal.number(VALUE_PLACES))
    tree = _bounded(value)
    sql = tree.sql(dialect=dialect)
    for name, replacement in replacements.items():
        if name not in sql:  # pragma: no cover - generator invariant
            raise AssertionError(f"placeholder {name} lost in {sql!r}")
        sql = sql.replace(name, replacement)
    return sql


# --------------------------------------------------------------------------- helpers


_INTEGER_RANGES: dict[exp.DataType.Type, tuple[int, int]] = {
    exp.DataType.Type.SMALLINT: (-(2**15), 2**15 - 1),
    exp.DataType.Type.INT: (-(2**31), 2**31 - 1),
    exp.DataType.Type.BIGINT: (-(2**63), 2**63 - 1),
}
# CAST(x AS DECIMAL) without (precision, scale): the scale of the property values
BARE_DECIMAL = (38, 12)
MAX_DECIMAL_PRECISION = 38
# an event's value, a quotient and a product's factors keep 12 places; a quotient's
# dividend and divisor and a remainder's operands are taken at 24 first
VALUE_PLACES = 12
QUOTIENT_WORKING_PLACES = 24
# Every sum, difference, product, quotient and cast -- and the event's value -- is null
# from this magnitude on, the property values' bound: ClickHouse's Decimal256 wraps
# silently past 76 digits (five factors near 10^4 at scale 12 did).
# Bounded operands at 12 places keep every product below 10^76.
VALUE_BOUND = Decimal(10) ** PROPERTY_INTEGER_DIGITS
# expressions whose value is true, false or null
_TRUTH_VALUES = (exp.Predicate, exp.Connector, exp.Not, exp.Boolean)


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _decimal_parameters(metric_code: str, data_type: exp.DataType) -> tuple[int, int]:
    """(precision, scale) of a DECIMAL/NUMERIC cast target; refuses what either warehouse
    could not hold."""
    params = [param.this for param in data_type.expressions]
    if not params:
        return BARE_DECIMAL
    values = [int(p.this) if isinstance(p, exp.Literal) and not p.is_string and p.this.isdigit() else None
              for p in params]
    precision, scale = (values + [0])[:2] if len(values) <= 2 else (None, None)
    if precision is None or scale is None or not (
        1 <= precision <= MAX_DECIMAL_PRECISION and scale <= min(precision, PROPERTY_DECIMAL_PLACES)
    ):
        raise CustomExpressionError(
            metric_code, data_type.sql(),
            f"DECIMAL(precision, scale) needs 1 <= precision <= {MAX_DECIMAL_PRECISION} and "
            f"scale <= precision, scale <= {PROPERTY_DECIMAL_PLACES} (units keep {PROPERTY_DECIMAL_PLACES} places)",
        )
    return precision, scale


def _decimal_constant(value: Decimal) -> exp.Expression:
    """CAST('<value>' AS DECIMAL(76, <its places>)): a number literal or a bound the
    compiler adds, which neither warehouse reads as a float (a range bound has up to
    26 + 13 digits)."""
    to = exp.DataType.build(f"DECIMAL(76, {_places(value)})")
    to.set("nullable", False)
    return exp.Cast(this=exp.Literal.string(format(value, "f")), to=to)


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _nullable(data_type: exp.DataType) -> exp.DataType:
    """A copy of ``data_type`` that admits null (ClickHouse raises casting a null to a
    non-Nullable type)."""
    nullable = data_type.copy()
    nullable.set("nullable", True)
    return nullable


def _rounded_cast(cast: exp.Cast) -> exp.Expression:
    """CAST(x AS t) as both warehouses compute it alike: x rounded half away from zero to
    t's scale (PostgreSQL's cast rounds, ClickHouse's truncates), and null when t cannot
    hold it or x is null (both raise, and one event must not fail every close)."""
    operand = cast.this
    if isinstance(operand.unnest(), _TRUTH_VALUES):
        # 1, 0 or null (PostgreSQL casts a boolean to INT only): nothing to round or to overflow
        as_number = exp.Case(ifs=[
            exp.If(this=operand.copy(), true=exp.Literal.number(1)),
            exp.If(this=exp.Not(this=exp.Paren(this=operand.copy())), true=exp.Literal.number(0)),
        ])
        return exp.Cast(this=as_number, to=_nullable(_decimal_target(cast.to)))
    if isinstance(operand, exp.Literal) and operand.is_string:
        operand = _decimal_constant(_number(operand.this) or Decimal(0))
    target = cast.to
    if target.this in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[target.this]
        scale = 0
        largest = Decimal(high)
        target = _decimal_target(target)
        in_range = exp.and_(
            exp.GT(this=operand.copy(), expression=_decimal_constant(low - Decimal("0.5"))),
            exp.LT(this=operand.copy(), expression=_decimal_constant(high + Decimal("0.5"))),
        )
    else:
        precision, scale = _decimal_parameters("", target)
        target = exp.DataType.build(f"DECIMAL({precision}, {scale})")
        with localcontext() as exact:
            exact.prec = 100
            limit = min(Decimal(10) ** (precision - scale), VALUE_BOUND) - Decimal(5) * Decimal(10) ** (-scale - 1)
            largest = Decimal(10) ** (precision - scale) - Decimal(10) ** -scale
        low = -largest
        in_range = exp.LT(this=exp.Abs(this=operand.copy()), expression=_decimal_constant(limit))
    # clamped to t's range: ClickHouse may compute the cast where the CASE does not take
    # it (a constant is folded, a null's stored value is any number), and it raises there
    clamped = exp.Least(
        this=exp.Greatest(this=operand.copy(), expressions=[_decimal_constant(Decimal(low))]),
        expressions=[_decimal_constant(Decimal(largest))],
    )
    rounded = exp.Round(this=clamped, decimals=exp.Literal.number(scale))
    return exp.Case(ifs=[exp.If(this=in_range, true=exp.Cast(this=rounded, to=_nullable(target)))])


_REWRITTEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Cast, exp.Length,
    exp.Ceil, exp.Floor, exp.Sign, exp.If, exp.Case, exp.Coalesce,
)  # fmt: skip


def _decimal_safe(node: exp.Expression) -> exp.Expression | None:
    """What ``node`` (its operands already rewritten) becomes so that both warehouses
    compute it alike and no value fails a close; None when it is changed in place or
    stays as it is."""
    if isinstance(node, exp.Div):
        return _bounded(_rounded_quotient(node))
    if isinstance(node, exp.Mod):
        return _remainder(node)
    if isinstance(node, exp.Mul):
        return _bounded(exp.Mul(this=_factor(node.this), expression=_factor(node.expression)))
    if isinstance(node, (exp.Add, exp.Sub)):
        return _bounded(node.copy())
    if isinstance(node, exp.Cast):
        return _rounded_cast(node) if node.meta.get("written") else None  # else a literal's
    if isinstance(node, exp.Length):
        return exp.Cast(this=node.copy(), to=exp.DataType.build("DECIMAL(76, 0)"))
    if isinstance(node, (exp.Ceil, exp.Floor, exp.Sign)):
        # of a decimal: PostgreSQL takes an integer's as a double precision
        if not _is_number_leaf(node.this):
            node.set("this", _working_decimal(node.this))
        return None
    if node.meta.get("numeric"):  # IF, CASE, COALESCE
        _take_branches_at_24_places(node)
    return None


def _decimal_target(data_type: exp.DataType) -> exp.DataType:
    """An integer type as DECIMAL(76, 0): ClickHouse's integer arithmetic wraps silently
    (two BIGINTs add up past 2^63 to a negative number), and PostgreSQL's CEIL, FLOOR and
    SIGN of an integer are a double precision."""
    return exp.DataType.build("DECIMAL(76, 0)") if data_type.this in _INTEGER_RANGES else data_type


def _rounded_quotient(division: exp.Div) -> exp.Expression:
    """x / y rounded half away from zero to 12 places, alike on both warehouses: both are
    taken to 24 places first (ClickHouse divides to the dividend's scale, truncating, and
    refuses a divisor of a larger scale; PostgreSQL divides to a scale of its own,
    rounding). A property's or a literal's scale (at most 12) needs no cast as divisor."""
    divisor = _divisor(
        division.expression,
        lambda d: d.copy() if _is_number_leaf(d) else _working_decimal(d),
    )
    quotient = exp.Div(this=_working_decimal(division.this), expression=divisor)
    quotient.set("typed", True)
    quotient.set("safe", False)
    rounded = exp.Round(this=quotient, decimals=exp.Literal.number(VALUE_PLACES))
    rounded.meta["places"] = VALUE_PLACES
    return rounded


def _remainder(modulo: exp.Mod) -> exp.Expression:
    """x % y with both operands at 24 places: ClickHouse's decimal modulo is wrong when
    their scales differ (0.001 % 0.002 gives 0) or raises."""
    return exp.Mod(this=_working_decimal(modulo.this), expression=_divisor(modulo.expression, _working_decimal))


def _divisor(
    divisor: exp.Expression, at_24_places: Callable[[exp.Expression], exp.Expression]
) -> exp.Expression:
    """The divisor at 24 places, in ``NULLIF(divisor, 0)`` unless it is a non-zero
    number literal: both warehouses raise on a decimal division or modulo by zero, and
    one event must not fail every close; the event's value is then NULL, which the
    metric's sum skips."""
    scaled = at_24_places(divisor)
    if _literal_value(divisor) not in (None, 0):
        return scaled
    return exp.Nullif(this=scaled, expression=exp.Literal.number(0))


def _working_decimal(operand: exp.Expression) -> exp.Expression:
    """``operand`` as DECIMAL(76, 24): exact, as no value in an expression has more
    places (properties, literals and casts have at most 12, products 24)."""
    to = _nullable(exp.DataType.build(f"DECIMAL(76, {QUOTIENT_WORKING_PLACES})"))
    return exp.Cast(this=operand.copy(), to=to)


def _factor(operand: exp.Expression) -> exp.Expression:
    """A product's factor, rounded half away from zero to 12 places: two bounded factors
    of 12 places multiply to fewer than 76 digits. A property or a number literal has at
    most 12 places already."""
    if _is_number_leaf(operand):
        return operand.copy()
    rounded = exp.Round(this=operand.copy(), decimals=exp.Literal.number(VALUE_PLACES))
    return exp.Cast(this=rounded, to=_nullable(exp.DataType.build(f"DECIMAL(76, {VALUE_PLACES})")))


def _literal_value(operand: exp.Expression) -> Decimal | None:
    """The number a (compiled) number literal holds; None for anything else."""
    operand = operand.unnest()
    if isinstance(operand, exp.Cast) and not operand.meta.get("written") and isinstance(operand.this, exp.Literal):
        return _number(operand.this.this)  # the compiler's CAST('<digits>' AS DECIMAL(76, s))
    if isinstance(operand, exp.Literal) and not operand.is_string:
        return _number(operand.this)
    return None


def _is_number_leaf(operand: exp.Expression) -> bool:
    """A property (a decimal of at most 12 places), the timestamp, or a number literal."""
    operand = operand.unnest()
    if isinstance(operand, exp.Neg):
        operand = operand.this.unnest()
    return isinstance(operand, exp.Column) or _literal_value(operand) is not None


def _branches(conditional: exp.Expression) -> list[exp.Expression]:
    """The values an IF, a CASE or a COALESCE chooses from (not its conditions)."""
    if isinstance(conditional, exp.If):
        candidates = [conditional.args.get("true"), conditional.args.get("false")]
    elif isinstance(conditional, exp.Case):
        candidates = [when.args.get("true") for when in conditional.args.get("ifs") or []]
        candidates.append(conditional.args.get("default"))
    else:
        candidates = [conditional.this, *conditional.expressions]
    return [c for c in candidates if c is not None and not isinstance(c.unnest(), exp.Null)]


def _is_integer_literal(node: exp.Expression) -> bool:
    node = node.unnest()
    if isinstance(node, exp.Neg):
        node = node.this.unnest()
    return isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit()


def _take_branches_at_24_places(conditional: exp.Expression) -> None:
    """Every value of a numeric IF/CASE/COALESCE (but one choosing between integer
    literals) as DECIMAL(76, 24): ClickHouse refuses to choose between decimals of
    different scales (``IF(c, properties.a, 0.5)`` failed every close) and chooses
    between a decimal and an integer as a Float64."""
    for value in _branches(conditional):
        value.replace(_working_decimal(value))


def _bounded(value: exp.Expression) -> exp.Expression:
    """``value``, or null when its magnitude reaches `VALUE_BOUND`, with ``value``
    written once: NULLIF(NULLIF(LEAST(GREATEST(value, -bound), bound), bound), -bound)."""
    low, high = _decimal_constant(-VALUE_BOUND), _decimal_constant(VALUE_BOUND)
    clamped = exp.Least(this=exp.Greatest(this=value, expressions=[low]), expressions=[high])
    bounded = exp.Nullif(
        this=exp.Nullif(this=clamped, expression=high.copy()),
        expression=low.copy(),
    )
    bounded.meta["bounded"] = value
    return bounded


def _scan_tokens(metric_code: str, expression: str) -> None:
    try:
        tokens = sqlglot.tokenize(expression)
    except (TokenError, ParseError) as e:
        raise CustomExpressionError(metric_code, expression, f"cannot tokenize ({e})")
    for i, tok in enumerate(tokens):
        if tok.token_type in (TokenType.STRING, TokenType.NUMBER):
            continue
        if tok.token_type == TokenType.SEMICOLON:
            raise CustomExpressionError(
                metric_code,
                expression[tok.start :].strip(),
                "only a single expression is allowed (found ';')",
            )
        upper = tok.text.upper()
        prev = tokens[i - 1] if i > 0 else None
        after_dot = prev is not None and prev.token_type == TokenType.DOT
        if (
            tok.token_type != TokenType.IDENTIFIER
            and upper in _FORBIDDEN_KEYWORDS
            and not after_dot
        ):
            raise CustomExpressionError(
                metric_code, expression[tok.start :].strip(), _FORBIDDEN_KEYWORDS[upper]
            )
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            nxt is not None
            and nxt.token_type == TokenType.L_PAREN
            and tok.token_type not in (TokenType.IDENTIFIER, TokenType.R_PAREN)
            and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok.text)
            and tok.text.lower() not in ALLOWED_FUNCTIONS
            and tok.text.lower() not in _NON_FUNCTION_WORDS
            and tok.text.upper() not in _KNOWN_FUNCTIONS
            and not after_dot
        ):
            raise CustomExpressionError(
                metric_code,
                _call_fragment(expression, tok.start),
                f"unknown function '{tok.text}' (allowed: "
                f"{', '.join(sorted(ALLOWED_FUNCTIONS))})",
            )


def _call_fragment(expression: str, start: int) -> str:
    """The text of a call `name(...)` starting at ``start`` (balanced parentheses)."""
    depth = 0
    for j in range(start, len(expression)):
        if expression[j] == "(":
            depth += 1
        elif expression[j] == ")":
            depth -= 1
            if depth == 0:
                return expression[start : j + 1]
    return expression[start:]


def _parse_single(metric_code: str, expression: str) -> exp.Expression:
    try:
        statements = sqlglot.parse(expression)
    except (ParseError, TokenError) as e:
        errors = getattr(e, "errors", None) or []
        fragment = errors[0].get("highlight") if errors else None
        raise CustomExpressionError(
            metric_code,
            fragment or expression,
            f"cannot parse expression ({errors[0]['description'] if errors else e})",
        ) from None
    statements = [s for s in statements if s is not None]
    if len(statements) != 1:
        raise CustomExpressionError(
            metric_code, expression, "only a single expression is allowed"
        )
    return statements[0]


def _validate(metric_code: str, tree: exp.Expression) -> None:
    for node in tree.walk(bfs=True):
        fragment = node.sql()
        if isinstance(node, _STATEMENT_NODES):
            raise CustomExpressionError(
                metric_code, fragment, "DDL/DML statements are not allowed"
            )
        if isinstance(node, (exp.Subquery, exp.Query)):
            raise CustomExpressionError(metric_code, fragment, "subqueries are not allowed")
        if isinstance(node, (exp.Table, exp.From, exp.Join)):
            raise CustomExpressionError(
                metric_code, fragment, "table references are not allowed"
            )
        if isinstance(node, exp.Window):
            raise CustomExpressionError(
                metric_code, fragment, "window functions are not allowed"
            )
        if isinstance(node, exp.AggFunc):
            raise CustomExpressionError(
                metric_code,
                fragment,
                "aggregate functions are not allowed (custom_agg already sums per event)",
            )
        if isinstance(node, exp.Alias):
            raise CustomExpressionError(metric_code, fragment, "aliases are not allowed")
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            raise CustomExpressionError(
                metric_code, fragment, "placeholders/parameters are not allowed"
            )
        if isinstance(node, (exp.Anonymous, exp.Func)) and not isinstance(
            node, _ALLOWED_NODES
        ):
            if isinstance(node, exp.Anonymous):
                reason = f"unknown function '{node.name}'"
            else:
                reason = f"function '{node.sql_name()}' is not allowed"
            raise CustomExpressionError(metric_code, fragment, reason)
        if not isinstance(node, _ALLOWED_NODES):
            raise CustomExpressionError(
                metric_code, fragment, f"{type(node).__name__} is not allowed"
            )
        if isinstance(node, exp.Column):
            _validate_column(metric_code, node)
        elif isinstance(node, exp.Literal) and not node.is_string:
            _validate_number(metric_code, node)
        elif isinstance(node, exp.Identifier):
            if not isinstance(node.parent, exp.Column):
                raise CustomExpressionError(
                    metric_code, fragment, "unknown identifier"
                )
        elif isinstance(node, exp.DataType):
            if node.this not in ALLOWED_CAST_TYPES:
                raise CustomExpressionError(
                    metric_code,
                    fragment,
                    "CAST is only allowed to DECIMAL/NUMERIC, INT, BIGINT or SMALLINT",
                )
            _decimal_parameters(metric_code, node)
        elif isinstance(node, exp.Cast):
            operand = node.this
            if (isinstance(operand, exp.Column) and not operand.table) or (
                isinstance(operand, exp.Literal) and operand.is_string and _number(operand.this) is None
            ):
                raise CustomExpressionError(metric_code, fragment, "CAST applies to numbers only")
        elif isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                raise CustomExpressionError(
                    metric_code, fragment, "IN accepts only a list of values"
                )


# --------------------------------------------------------------------------- kinds

# What an expression is: both warehouses raise, at every close, on an operation over the
# wrong kind (a number plus text, a number compared with text, a boolean summed on
# PostgreSQL), so such an expression is refused when the catalog loads.
NUMBER, TEXT, BOOLEAN, TIMESTAMP, NULL = "a number", "text", "a condition", "the timestamp", "null"
_COMPARISONS = (exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE)
# operators whose operands (this, and expression if any) are all of one kind
_OPERATORS: tuple[tuple[tuple[type[exp.Expression], ...], str, str], ...] = (
    # (operators, their operands' kind, their kind)
    ((exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg,
      exp.Round, exp.Ceil, exp.Floor, exp.Abs, exp.Sign), NUMBER, NUMBER),
    ((exp.And, exp.Or, exp.Not), BOOLEAN, BOOLEAN),
    ((exp.Length,), TEXT, NUMBER),
    ((exp.Lower, exp.Upper), TEXT, TEXT),
)  # fmt: skip


def _check_kinds(metric_code: str, tree: exp.Expression) -> None:
    kind = _kind(metric_code, tree)
    if kind == BOOLEAN:
        raise CustomExpressionError(
            metric_code, tree.sql(),
            "the expression is a condition; the metric sums numbers (CAST(... AS INT) counts it as 1 or 0)",
        )
    if kind not in (NUMBER, NULL):
        raise CustomExpressionError(metric_code, tree.sql(), f"the expression is {kind}; the metric sums numbers")


def _kind(metric_code: str, node: exp.Expression) -> str:
    """The kind of a validated expression; raises where an operand has the wrong one."""

    def need(operand: exp.Expression, *kinds: str) -> str:
        found = _kind(metric_code, operand)
        if found != NULL and found not in kinds:
            raise CustomExpressionError(
                metric_code, node.sql(), f"{' or '.join(kinds)} is needed where {operand.sql()} is {found}"
            )
        return found

    def alike(*operands: exp.Expression) -> str:
        kinds = [_kind(metric_code, operand) for operand in operands]
        present = {kind for kind in kinds if kind != NULL}
        if present <= {TIMESTAMP, TEXT} and TIMESTAMP in present:
            return TIMESTAMP  # the timestamp against a date or time written as text
        if len(present) > 1:
            shown = ", ".join(f"{operand.sql()} is {kind}" for operand, kind in zip(operands, kinds))
            raise CustomExpressionError(metric_code, node.sql(), f"operands of different kinds: {shown}")
        return present.pop() if present else NULL

    if isinstance(node, exp.Paren):
        return _kind(metric_code, node.this)
    if isinstance(node, exp.Null):
        return NULL
    if isinstance(node, exp.Boolean):
        return BOOLEAN
    if isinstance(node, exp.Literal):
        return TEXT if node.is_string else NUMBER
    if isinstance(node, exp.Column):
        if not node.table:
            return TIMESTAMP
        return TEXT if _is_text_context(node) else NUMBER
    for operators, operand_kind, kind in _OPERATORS:
        if isinstance(node, operators):
            for operand in (node.this, node.args.get("expression")):
                if operand is not None:
                    need(operand, operand_kind)
            return kind
    if isinstance(node, _COMPARISONS):
        alike(node.this, node.expression)
        return BOOLEAN
    if isinstance(node, exp.Between):
        alike(node.this, node.args["low"], node.args["high"])
        return BOOLEAN
    if isinstance(node, exp.In):
        alike(node.this, *node.expressions)
        return BOOLEAN
    if isinstance(node, exp.Is):
        _kind(metric_code, node.this)
        return BOOLEAN
    if isinstance(node, exp.If):
        need(node.this, BOOLEAN)
        return alike(*_branches(node))
    if isinstance(node, exp.Case):
        for when in node.args.get("ifs") or []:
            if node.this is not None:  # CASE x WHEN v THEN ...
                alike(node.this, when.this)
            else:
                need(when.this, BOOLEAN)
        return alike(*_branches(node))
    if isinstance(node, exp.Coalesce):
        return alike(*_branches(node))
    if isinstance(node, (exp.Greatest, exp.Least)):
        return alike(node.this, *node.expressions)
    if isinstance(node, exp.Nullif):
        return alike(node.this, node.expression)
    if isinstance(node, exp.Cast):
        if not (isinstance(node.this, exp.Literal) and node.this.is_string):  # CAST('2.5' AS ...)
            need(node.this, NUMBER, BOOLEAN)
        return NUMBER
    raise AssertionError(f"unchecked node {type(node).__name__}")  # pragma: no cover - _validate allows no other


def _validate_number(metric_code: str, literal: exp.Literal) -> None:
    """A number literal obeys the property values' rule: below 10^26, at most 12 places."""
    value = _number(literal.this)
    if value is None:  # pragma: no cover - the tokenizer only yields numbers
        raise CustomExpressionError(metric_code, literal.sql(), "not a number")
    if abs(value) >= VALUE_BOUND or _places(value) > PROPERTY_DECIMAL_PLACES:
        raise CustomExpressionError(
            metric_code, literal.sql(),
            f"a number must be below 10^{PROPERTY_INTEGER_DIGITS} in magnitude with at most "
            f"{PROPERTY_DECIMAL_PLACES} decimal places (what a property value holds)",
        )


def _validate_column(metric_code: str, col: exp.Column) -> None:
    fragment = col.sql()
    if col.args.get("db") or col.args.get("catalog"):
        raise CustomExpressionError(
            metric_code,
            fragment,
            "unknown identifier (use properties.<key> or timestamp; nested keys "
            "are not supported)",
        )
    if not col.table:
        if col.name.lower() == "timestamp":
            return
        raise CustomExpressionError(
            metric_code,
            fragment,
            "unknown identifier (use properties.<key> or timestamp)",
        )
    if col.table.lower() != "properties":
        raise CustomExpressionError(
            metric_code,
            fragment,
            "unknown identifier (use properties.<key> or timestamp)",
        )
    if not _PROPERTY_KEY.fullmatch(col.name):
        raise CustomExpressionError(
            metric_code, fragment, "property keys must match [A-Za-z0-9_-]+"
        )


def _is_parameter(literal: exp.Literal) -> bool:
    """A type's precision or scale, or ROUND's places: an integer, not a value."""
    return isinstance(literal.parent, exp.DataTypeParam) or (
        isinstance(literal.parent, exp.Round) and literal.arg_key == "decimals"
    )


def _decimal_literal(node: exp.Literal) -> exp.Expression:
    """A number literal as CAST('<digits>' AS DECIMAL(76, <its places>)): ClickHouse reads
    a fraction or an integer past 20 digits as a Float64 and computes in Decimal128 (which
    wraps past 38 digits); PostgreSQL's integers raise past 2^31 (100000 * 100000)."""
    value = _number(node.this)
    return node.copy() if value is None else _decimal_constant(value)  # None: never (validated)
