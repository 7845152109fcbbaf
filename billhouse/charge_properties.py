"""Validation of a charge's ``properties`` per charge model, in Lago's names.

``parse_price(model, properties, where)`` returns a ``Price``: the model's scalar
properties as Decimals and, for tiered models, its ranges normalized into rows with
explicit bounds. Ranges may be written the Lago way, inclusive on integers
(``0–100``, ``101–200``), or adjacent (``0–100``, ``100–200``); both mean: a range
holds the units above the previous range's ``to_value`` up to and including its own
(the first range also holds 0). Every error names the place and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from billhouse.errors import CatalogError

RANGE_KEYS = {
    "graduated": ("graduated_ranges", "per_unit_amount"),
    "volume": ("volume_ranges", "per_unit_amount"),
    "graduated_percentage": ("graduated_percentage_ranges", "rate"),
}


@dataclass(frozen=True)
class PriceRange:
    range_index: int
    from_value: Decimal
    to_value: Decimal | None
    lower_bound: Decimal  # exclusive, except that the first range also holds 0
    per_unit_amount: Decimal | None
    rate: Decimal | None  # percent, for graduated_percentage
    flat_amount: Decimal


@dataclass(frozen=True)
class Price:
    amount: Decimal | None = None
    package_size: Decimal | None = None
    free_units: Decimal | None = None
    rate: Decimal | None = None
    fixed_amount: Decimal | None = None
    free_units_per_events: int | None = None
    free_units_per_total_aggregation: Decimal | None = None
    per_transaction_min_amount: Decimal | None = None
    per_transaction_max_amount: Decimal | None = None
    ranges: tuple[PriceRange, ...] = field(default_factory=tuple)


def decimal_field(obj: dict[str, Any], key: str, where: str, required: bool = True) -> Decimal | None:
    """A non-negative decimal written as a string or an integer (floats lose cents)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise CatalogError(where, key, 'is required (a decimal string such as "0.01")')
        return None
    if isinstance(value, (bool, float)):
        raise CatalogError(where, key, f'must be a decimal string such as "0.01" (floats lose cents), got {value!r}')
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise CatalogError(where, key, f"is not a decimal number: {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise CatalogError(where, key, f"must be a finite number ≥ 0, got {value!r}")
    return number


def parse_price(model: str, properties: dict[str, Any], where: str) -> Price:
    where = f"{where} properties"
    if model == "standard":
        # Lago names the unit price `amount`; `per_unit_amount` is accepted as a synonym.
        if "amount" not in properties and "per_unit_amount" in properties:
            properties = {**properties, "amount": properties["per_unit_amount"]}
        return Price(amount=decimal_field(properties, "amount", where))
    if model == "package":
        size = decimal_field(properties, "package_size", where)
        assert size is not None
        if size <= 0:
            raise CatalogError(where, "package_size", f"must be > 0, got {properties['package_size']!r}")
        return Price(
            amount=decimal_field(properties, "amount", where),
            package_size=size,
            free_units=decimal_field(properties, "free_units", where, required=False) or Decimal(0),
        )
    if model == "percentage":
        events = properties.get("free_units_per_events")
        if events is not None and (isinstance(events, bool) or not isinstance(events, int) or events < 0):
            raise CatalogError(where, "free_units_per_events", f"must be an integer ≥ 0, got {events!r}")
        low = decimal_field(properties, "per_transaction_min_amount", where, required=False)
        high = decimal_field(properties, "per_transaction_max_amount", where, required=False)
        if low is not None and high is not None and low > high:
            raise CatalogError(where, "per_transaction_min_amount", f"{low} is above per_transaction_max_amount {high}")
        return Price(
            rate=decimal_field(properties, "rate", where),
            fixed_amount=decimal_field(properties, "fixed_amount", where, required=False),
            free_units_per_events=events or None,
            free_units_per_total_aggregation=(
                decimal_field(properties, "free_units_per_total_aggregation", where, required=False) or None
            ),
            per_transaction_min_amount=low,
            per_transaction_max_amount=high,
        )
    if model in RANGE_KEYS:
        key, price_key = RANGE_KEYS[model]
        return Price(ranges=parse_ranges(properties.get(key), key, price_key, where))
    raise CatalogError(where, "charge_model", f"unknown charge model {model!r}")


def parse_ranges(raw: Any, key: str, price_key: str, where: str) -> tuple[PriceRange, ...]:
    if not isinstance(raw, list) or not raw:
        raise CatalogError(where, key, "is required: a list of ranges with from_value and to_value")
    ranges: list[PriceRange] = []
    previous_to: Decimal | None = None
    for index, item in enumerate(raw):
        place = f"{where} {key}[{index}]"
        if not isinstance(item, dict):
            raise CatalogError(place, "(range)", "must be a mapping")
        from_value = decimal_field(item, "from_value", place)
        assert from_value is not None
        to_value = decimal_field(item, "to_value", place, required=False)
        if index == 0:
            if from_value != 0:
                raise CatalogError(place, "from_value", f"the first range must start at 0, got {from_value}")
            lower = Decimal(0)
        else:
            assert previous_to is not None
            if from_value not in (previous_to, previous_to + 1):
                raise CatalogError(
                    place, "from_value",
                    f"must continue the previous range: {previous_to} or {previous_to + 1}, got {from_value}",
                )
            lower = previous_to
        last = index == len(raw) - 1
        if to_value is None and not last:
            raise CatalogError(place, "to_value", "only the last range may be open (to_value: null)")
        if to_value is not None and last:
            raise CatalogError(place, "to_value", "the last range must be open (to_value: null)")
        if to_value is not None and (to_value < from_value or (index > 0 and to_value <= lower)):
            raise CatalogError(place, "to_value", f"must be above from_value {from_value}, got {to_value}")
        ranges.append(
            PriceRange(
                range_index=index,
                from_value=from_value,
                to_value=to_value,
                lower_bound=lower,
                per_unit_amount=decimal_field(item, "per_unit_amount", place) if price_key == "per_unit_amount" else None,
                rate=decimal_field(item, "rate", place) if price_key == "rate" else None,
                flat_amount=decimal_field(item, "flat_amount", place, required=False) or Decimal(0),
            )
        )
        previous_to = to_value
    return tuple(ranges)
