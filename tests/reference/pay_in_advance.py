"""Reference per-event (pay-in-advance) fees: Decimal in, Decimal out (tests only).

A per-event charge bills each event, in order, the increase of the highest amount so
far: the charge's amount over the events so far, when it exceeds every earlier such
amount, minus that earlier highest amount; the amount over no event is 0 (not the
model's amount at zero units: the first graduated range's flat amount is paid by the
first event). An event lowering the amount (a negative sum_agg value) pays 0 and later
events pay only above the peak, so no fee is negative and the fees of a period add up
to the highest amount its events reached — the arrears amount of the same events when
the amount never falls (docs/billing-clock.md, "Pay-in-advance charges", "Negative
usage"). The charge models are non-decreasing in units, so this is the amount over
the period's peak units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from . import charge_models as ref

AmountOfEvents = Callable[[Sequence[Decimal]], Decimal]


def per_event_amounts(values: Sequence[ref.Number], amount_of: AmountOfEvents) -> list[Decimal]:
    """The precise fee of every event, given the events' values in billing order."""
    decimals = [ref.D(v) for v in values]
    fees: list[Decimal] = []
    billed = Decimal(0)  # the highest amount so far
    for k in range(1, len(decimals) + 1):
        highest = max(billed, amount_of(decimals[:k]))
        fees.append(highest - billed)
        billed = highest
    return fees


def amount_of_events(charge_model: str, properties: Mapping[str, Any], rounding: str | None = None) -> AmountOfEvents:
    """The arrears amount of a list of event values, for one charge model (reference);
    ``rounding`` (a decimal rounding mode) rounds the summed units to whole units first,
    as a metric's rounding_function with precision 0."""

    def total(values: Sequence[Decimal]) -> Decimal:
        units = sum(values, Decimal(0))
        return units.to_integral_value(rounding=rounding) if rounding else units

    if charge_model == "standard":
        return lambda values: ref.standard(total(values), properties["amount"])
    if charge_model == "graduated":
        return lambda values: ref.graduated(total(values), properties["graduated_ranges"]).total
    if charge_model == "graduated_percentage":
        return lambda values: ref.graduated_percentage(
            total(values), properties["graduated_percentage_ranges"]).total
    if charge_model == "package":
        return lambda values: ref.package(
            total(values), properties["amount"], str(properties["package_size"]),
            str(properties.get("free_units", 0)))
    if charge_model == "percentage":
        return lambda values: ref.percentage(
            list(enumerate(values)),
            properties["rate"],
            properties.get("fixed_amount"),
            properties.get("free_units_per_events"),
            properties.get("free_units_per_total_aggregation"),
            properties.get("per_transaction_min_amount"),
            properties.get("per_transaction_max_amount"),
        ).total
    raise ValueError(f"{charge_model} is not billed per event")
