"""The one rule for a number written in an event property.

Ingestion accepts a metric's field value only when it is a number by this rule and below
PROPERTY_MAGNITUDE_LIMIT; both warehouses read exactly these values as numbers — to
PROPERTY_DECIMAL_PLACES decimal places, further digits dropped (toward zero) — and
anything else, a larger number included, as null (raw_tables.clickhouse_decimal_of_raw_json,
the property_decimal macro, catalog.PROPERTY_DECIMAL_SQL). So a value ingestion accepted
is billed as the number it spells on either warehouse, never silently as 0.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, localcontext
from typing import Any

# A JSON number's text or a numeric string: ASCII digits with an optional sign, decimal
# point and exponent, spaces around. No backslash, so the same text is a Python, an RE2
# (ClickHouse) and a POSIX (PostgreSQL) pattern; macros/event_properties.sql repeats it.
NUMERIC_TEXT_PATTERN = "^ *[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)? *$"
PROPERTY_DECIMAL_PLACES = 12
# ClickHouse reads a property as a Decimal128 of 12 places (toDecimal128OrNull): 26 digits
# before the point; PostgreSQL reads it the same way.
PROPERTY_INTEGER_DIGITS = 26
PROPERTY_MAGNITUDE_LIMIT = Decimal(10) ** PROPERTY_INTEGER_DIGITS

_NUMERIC_TEXT = re.compile(NUMERIC_TEXT_PATTERN)


def property_number(value: Any) -> Decimal | None:
    """The number a decoded JSON property value spells, exactly; None when it is not one
    (booleans, null, objects, arrays, other strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):  # not match: "$" passes a final "\n"
        return Decimal(value.strip(" "))
    return None


def billed_number(value: Any) -> Decimal | None:
    """A decoded JSON property value as both warehouses read it: the number it spells
    to PROPERTY_DECIMAL_PLACES places (the rest dropped, toward zero); None when it is
    not a number or not below PROPERTY_MAGNITUDE_LIMIT."""
    number = property_number(value)
    if number is None or abs(number) >= PROPERTY_MAGNITUDE_LIMIT:
        return None
    with localcontext() as context:
        context.prec = 60  # 26 digits before the point and 12 after fit
        return number.quantize(Decimal(1).scaleb(-PROPERTY_DECIMAL_PLACES), rounding=ROUND_DOWN)
