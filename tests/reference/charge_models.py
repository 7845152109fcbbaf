"""Reference charge models (semantics.md, "Charge models"): Decimal in, Decimal out.

Amounts are in major units (Lago's convention, e.g. Decimal("0.01") is one cent);
`round_half_up_to_minor_units` turns a precise amount into cents.

Choices where semantics.md is silent (or only says "do what Lago does"):

* Negative units are priced as 0 units (semantics: "a negative aggregate bills 0").
  So graduated/volume still bill the first range's flat_amount at negative units,
  exactly as at zero units.
* Range boundaries. Range k covers the half-open interval (L_k, to_value_k] where
  L_1 = 0 (the first range also holds 0 itself) and L_k = to_value_{k-1}. The
  inclusive spelling (0-100, 101-200) and the adjacent spelling (0-100, 100-200)
  both give L_2 = 100, so they price identically. Fractional units between two
  integer ranges belong to the later range: 100.5 units over 0-100 / 101-inf is
  100 units in range 1 and 0.5 in range 2 (this is Lago's arithmetic:
  min(units, to) - from + 1 = 100.5 - 101 + 1). Validation: the first from_value
  is 0; every later from_value is the previous to_value or to_value + 1; only
  the last to_value is None (infinity).
* graduated: a range is "reached" when it is the first range or units > L_k; a
  reached range adds flat_amount once plus its units x per_unit_amount. At exactly
  to_value the next range is not reached (its flat_amount is not charged). The
  first range's flat_amount is charged even at zero units (semantics.md; Lago bills
  nothing at zero units - a deliberate difference).
* volume: the single range containing the units, with the same (L_k, to_value_k]
  boundaries, prices every unit: units x per_unit_amount + flat_amount. At zero
  units that is the first range, so its flat_amount is charged (consistent with
  graduated; Lago returns 0 at zero units).
* package: package_size must be > 0; fractional paid units round the package count
  up (ceil(0.5 / 100) = 1 package).
* graduated_percentage: graduated with per_unit_amount = rate / 100.
* percentage: see `percentage`.
* Rounding to minor units is half away from zero (ROUND_HALF_UP on Decimal; same as
  Postgres round(numeric) and ClickHouse round(Decimal)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext
from typing import Any, NamedTuple

__all__ = [
    "Tier",
    "GraduatedResult",
    "PercentageResult",
    "D",
    "normalize_ranges",
    "standard",
    "graduated",
    "volume",
    "package",
    "percentage",
    "graduated_percentage",
    "min_amount_true_up",
    "min_amount_true_up_precise",
    "round_half_up_to_minor_units",
]

Number = Decimal | int | str
_PREC = 60  # working precision; far above the warehouse's 38 digits


def D(value: Number | None, default: Decimal | None = None) -> Decimal:
    """Convert int/str/Decimal to Decimal; floats are refused (no float for money)."""
    if value is None:
        if default is None:
            raise ValueError("missing number")
        return default
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"refusing {type(value).__name__} {value!r}: use Decimal or str")
    return value if isinstance(value, Decimal) else Decimal(value)


def _units(units: Number) -> Decimal:
    """Negative units price as zero units."""
    u = D(units)
    return u if u > 0 else Decimal(0)


@dataclass(frozen=True)
class Tier:
    """One normalized range: covers (lower, upper] (the first also covers 0)."""

    index: int
    from_value: Decimal
    to_value: Decimal | None
    lower: Decimal
    upper: Decimal | None
    per_unit_amount: Decimal
    flat_amount: Decimal

    def units_in(self, units: Decimal) -> Decimal:
        """Units of ``units`` that fall in this tier."""
        above = units - self.lower
        if above <= 0:
            return Decimal(0)
        if self.upper is None:
            return above
        return min(above, self.upper - self.lower)

    def reached(self, units: Decimal) -> bool:
        return self.index == 0 or units > self.lower

    def contains(self, units: Decimal) -> bool:
        if units < self.lower or (units == self.lower and self.index > 0):
            return False
        return self.upper is None or units <= self.upper


def normalize_ranges(
    ranges: Sequence[Mapping[str, Any]], price_key: str = "per_unit_amount"
) -> list[Tier]:
    """Validate Lago ranges (inclusive or adjacent spelling) into `Tier`s.

    ``price_key`` is "per_unit_amount" or "rate" (rate in %, turned into rate/100).
    """
    if not ranges:
        raise ValueError("at least one range is required")
    tiers: list[Tier] = []
    prev_to: Decimal | None = None
    for i, r in enumerate(ranges):
        from_value = D(r["from_value"])
        to_raw = r.get("to_value")
        to_value = None if to_raw is None else D(to_raw)
        if i == 0:
            if from_value != 0:
                raise ValueError("the first range must start at 0")
            lower = Decimal(0)
        else:
            assert prev_to is not None
            if from_value not in (prev_to, prev_to + 1):
                raise ValueError(
                    f"range {i}: from_value {from_value} must be {prev_to} or {prev_to + 1}"
                )
            lower = prev_to
        if to_value is None:
            if i != len(ranges) - 1:
                raise ValueError("only the last range may have to_value null")
        elif to_value < lower or (i > 0 and to_value <= lower) or to_value < from_value:
            raise ValueError(f"range {i}: to_value {to_value} too small")
        if i == len(ranges) - 1 and to_value is not None:
            raise ValueError("the last range must have to_value null")
        price = D(r.get(price_key), Decimal(0))
        if price_key == "rate":
            price = price / 100
        tiers.append(
            Tier(
                index=i,
                from_value=from_value,
                to_value=to_value,
                lower=lower,
                upper=to_value,
                per_unit_amount=price,
                flat_amount=D(r.get("flat_amount"), Decimal(0)),
            )
        )
        prev_to = to_value
    return tiers


class GraduatedResult(NamedTuple):
    """Total amount and the breakdown of every reached range."""

    total: Decimal
    tiers: list[dict[str, Decimal | None]]


class PercentageResult(NamedTuple):
    total: Decimal
    free_events: int
    paid_events: int
    free_units: Decimal
    paid_units: Decimal


def standard(units: Number, amount: Number) -> Decimal:
    """units x amount."""
    return _units(units) * D(amount)


def _graduated(units: Number, tiers: list[Tier]) -> GraduatedResult:
    u = _units(units)
    breakdown: list[dict[str, Decimal | None]] = []
    total = Decimal(0)
    for t in tiers:
        if not t.reached(u):
            break
        n = t.units_in(u)
        amount = n * t.per_unit_amount + t.flat_amount
        breakdown.append(
            {
                "from_value": t.from_value,
                "to_value": t.to_value,
                "units": n,
                "per_unit_amount": t.per_unit_amount,
                "flat_amount": t.flat_amount,
                "amount": amount,
            }
        )
        total += amount
    return GraduatedResult(total, breakdown)


def graduated(units: Number, ranges: Sequence[Mapping[str, Any]]) -> GraduatedResult:
    """Split units across ranges; each reached range adds flat_amount + units x price."""
    with localcontext() as ctx:
        ctx.prec = _PREC
        return _graduated(units, normalize_ranges(ranges))


def graduated_percentage(
    units: Number, ranges: Sequence[Mapping[str, Any]]
) -> GraduatedResult:
    """Graduated with ``rate`` (in %) per range instead of per_unit_amount.

    The breakdown's per_unit_amount is rate / 100.
    """
    with localcontext() as ctx:
        ctx.prec = _PREC
        return _graduated(units, normalize_ranges(ranges, price_key="rate"))


def volume(units: Number, ranges: Sequence[Mapping[str, Any]]) -> Decimal:
    """All units at the price of the one range containing them, + its flat_amount.

    Zero units bill nothing, flat amount included (as Lago does).
    """
    with localcontext() as ctx:
        ctx.prec = _PREC
        u = _units(units)
        if u == 0:
            return Decimal(0)
        for t in normalize_ranges(ranges):
            if t.contains(u):
                return u * t.per_unit_amount + t.flat_amount
    raise AssertionError("unreachable: the last range is unbounded")


def package(
    units: Number, amount: Number, package_size: Number, free_units: Number = 0
) -> Decimal:
    """amount x ceil(max(0, units - free_units) / package_size)."""
    size = D(package_size)
    if size <= 0:
        raise ValueError("package_size must be > 0")
    with localcontext() as ctx:
        ctx.prec = _PREC
        paid = max(Decimal(0), _units(units) - D(free_units))
        packages = (paid / size).to_integral_value(rounding=ROUND_CEILING)
        return D(amount) * packages


def percentage(
    events: Sequence[tuple[Any, Number]],
    rate: Number,
    fixed_amount: Number | None = None,
    free_units_per_events: int | None = None,
    free_units_per_total_aggregation: Number | None = None,
    per_transaction_min_amount: Number | None = None,
    per_transaction_max_amount: Number | None = None,
) -> PercentageResult:
    """Percentage of the field value beyond the free allowance, per event.

    ``events`` are (timestamp, value) pairs; they are stably sorted by timestamp
    (equal timestamps keep the given order). ``rate`` is in percent ("2.5" = 2.5 %).

    Free allowance (a limit of None or 0 is "not set"; neither set = no allowance):
    walk the events in time order while the allowance is open.
      * ``free_units_per_events`` = N: the first N events are free.
      * ``free_units_per_total_aggregation`` = A: events are free while the running
        total stays strictly below A. The event whose running total reaches or
        passes A is a paid event whose paid value is (running total - A) -- it pays
        the fixed amount even if that paid value is 0 (Lago's arithmetic).
      * Both set: the allowance closes at whichever limit is reached first.
    Every event after the allowance closed is paid in full.

    Each paid event costs  rate/100 x paid_value + fixed_amount, then clamped to
    [per_transaction_min_amount, per_transaction_max_amount] (each optional; min is
    applied first, so max wins if min > max). Free events cost nothing and are not
    clamped. The total is the sum over paid events, floored at 0 (negative values
    such as refunds can lower the total but never below 0).

    Difference from Lago: Lago skips fixed fees altogether when the summed value is
    0; here every paid event pays the fixed amount.
    """
    with localcontext() as ctx:
        ctx.prec = _PREC
        r = D(rate) / 100
        fixed = D(fixed_amount, Decimal(0))
        min_amt = None if per_transaction_min_amount is None else D(per_transaction_min_amount)
        max_amt = None if per_transaction_max_amount is None else D(per_transaction_max_amount)
        events_left: int | None = free_units_per_events or None
        amount_left: Decimal | None = D(free_units_per_total_aggregation, Decimal(0)) or None
        allowance_open = events_left is not None or amount_left is not None

        ordered = sorted(enumerate(events), key=lambda ie: (ie[1][0], ie[0]))
        total = Decimal(0)
        free_events = paid_events = 0
        free_units = paid_units = Decimal(0)
        for _, (_, raw_value) in ordered:
            value = D(raw_value)
            paid_value = value
            if allowance_open and events_left is not None and events_left <= 0:
                allowance_open = False
            if allowance_open:
                if amount_left is not None and value >= amount_left:
                    free_units += amount_left
                    paid_value = value - amount_left
                    allowance_open = False
                else:
                    if amount_left is not None:
                        amount_left -= value
                    if events_left is not None:
                        events_left -= 1
                    free_events += 1
                    free_units += value
                    continue
            event_amount = r * paid_value + fixed
            if min_amt is not None and event_amount < min_amt:
                event_amount = min_amt
            if max_amt is not None and event_amount > max_amt:
                event_amount = max_amt
            total += event_amount
            paid_events += 1
            paid_units += paid_value
        return PercentageResult(
            max(total, Decimal(0)), free_events, paid_events, free_units, paid_units
        )


def min_amount_true_up_precise(
    min_amount_cents: int, fees_cents: Number, billed_days: int, period_days: int
) -> Decimal:
    """Unrounded true-up in cents: max(0, min x billed_days / period_days - fees)."""
    if period_days <= 0 or billed_days < 0 or billed_days > period_days:
        raise ValueError("need 0 <= billed_days <= period_days, period_days > 0")
    with localcontext() as ctx:
        ctx.prec = _PREC
        prorated = D(min_amount_cents) * billed_days / period_days
        return max(Decimal(0), prorated - D(fees_cents))


def min_amount_true_up(
    min_amount_cents: int, fees_cents: Number, billed_days: int, period_days: int
) -> int:
    """True-up fee in cents (semantics: 1000, 200, 15, 31 -> 283.87... -> 284).

    ``fees_cents`` is the charge's total over all filters and groups (already
    rounded fee cents). The prorated minimum is not rounded before subtracting.
    """
    return round_half_up_to_minor_units(
        min_amount_true_up_precise(min_amount_cents, fees_cents, billed_days, period_days),
        0,
    )


def round_half_up_to_minor_units(amount: Decimal, exponent: int) -> int:
    """round_half_up(amount x 10^exponent) as int; ties go away from zero."""
    if isinstance(amount, float):
        raise TypeError("refusing float")
    with localcontext() as ctx:
        ctx.prec = _PREC
        scaled = D(amount).scaleb(exponent)
        return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))
