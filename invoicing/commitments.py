"""Plan minimum commitments: the true-up fee that lifts a period's fees to the minimum.

Lago: the minimum commitment of a plan applies per billing period to the total of the
subscription fee and all usage-based fees of that period (before coupons and taxes).
When they total less, a ``commitment`` fee for the difference is added to the invoice
that closes the period. In a partial period the minimum is prorated by days:
``minimum × period days ÷ full period days`` (the same rule as charge minimums in
semantics.md), and the true-up is ``round_half_up(prorated minimum − fees)``.

The period's fees are the draft's subscription and charge fees of one subscription
with that period. A pay-in-advance subscription fee was billed at the period's start,
on an earlier invoice: the plan's ``amount_cents`` (prorated the same way) counts for
it. Only periods that have ended by the issuing date get a true-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.money import round_half_up

__all__ = ["PlanCommitment", "add_commitment_true_ups", "prorate_ratio"]

_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}
_DISPLAY_NAME = "Minimum commitment true-up"


@dataclass(frozen=True)
class PlanCommitment:
    plan_code: str
    minimum_commitment_cents: int | None
    interval: str  # weekly | monthly | quarterly | semiannual | yearly
    amount_cents: int = 0  # the plan's subscription fee per period
    pay_in_advance: bool = False


def add_commitment_true_ups(
    drafts: Iterable[InvoiceDraft], plans: Mapping[str, PlanCommitment]
) -> list[InvoiceDraft]:
    """Each draft with a true-up fee per ended period below its plan's minimum."""
    result = []
    for draft in drafts:
        true_ups = list(_true_ups(draft, plans))
        if not true_ups:
            result.append(draft)
            continue
        added = sum(fee.amount_cents for fee in true_ups)
        result.append(
            replace(
                draft,
                fees=(*draft.fees, *true_ups),
                sub_total_cents=draft.sub_total_cents + added,
                total_cents=draft.total_cents + added,
            )
        )
    return result


def prorate_ratio(period_start: datetime, period_end: datetime, interval: str) -> Decimal:
    """Billed days ÷ days of the full period the [start, end) period belongs to.

    A period ending on a period boundary (the 1st, calendar billing) is the tail of
    ``[end − interval, end)``; otherwise it is the head of ``[start, start + interval)``
    (a termination, or anniversary billing). Days are whole days (instants are local
    midnights, so a DST day of 23 or 25 hours still counts as one).
    """
    days = _days(period_start, period_end)
    candidates = (_shift(period_end, interval, -1), period_end), (period_start, _shift(period_start, interval, 1))
    full = [_days(start, end) for start, end in candidates]
    if days in full:
        return Decimal(1)
    ends_on_boundary = _local_day(period_end) == 1 and _local_day(period_start) != 1
    full_days = full[0] if ends_on_boundary else full[1]
    return min(Decimal(1), Decimal(days) / Decimal(full_days))


def _true_ups(draft: InvoiceDraft, plans: Mapping[str, PlanCommitment]) -> Iterable[DraftFee]:
    groups: dict[tuple[str, str, datetime, datetime], list[DraftFee]] = {}
    for fee in draft.fees:
        if fee.kind in ("subscription", "charge") and fee.external_subscription_id and fee.plan_code:
            key = (fee.external_subscription_id, fee.plan_code, fee.period_start, fee.period_end)
            groups.setdefault(key, []).append(fee)
    last_day = draft.issuing_date + timedelta(days=1)
    for (subscription, plan_code, start, end), fees in groups.items():
        plan = plans.get(plan_code)
        if plan is None or not plan.minimum_commitment_cents or end.date() > last_day:
            continue
        if not any(fee.kind == "charge" for fee in fees) and all(f.kind == "subscription" for f in fees) and plan.pay_in_advance:
            continue  # an advance subscription fee alone: its period has not ended
        ratio = prorate_ratio(start, end, plan.interval)
        billed = Decimal(sum(fee.amount_cents for fee in fees))
        if plan.pay_in_advance and not any(fee.kind == "subscription" for fee in fees):
            billed += round_half_up(plan.amount_cents * ratio)
        minimum = plan.minimum_commitment_cents * ratio
        amount_cents = round_half_up(minimum - billed)
        if amount_cents <= 0:
            continue
        precise = (minimum - billed) / Decimal(10**draft.currency_exponent)
        yield DraftFee(
            fee_key=f"{subscription}/commitment/{start:%Y-%m-%dT%H:%M:%SZ}",
            kind="commitment",
            external_subscription_id=subscription,
            plan_code=plan_code,
            billable_metric_code=None,
            charge_model=None,
            invoice_display_name=_DISPLAY_NAME,
            period_start=start,
            period_end=end,
            units=Decimal(1),
            unit_amount=precise.normalize(),
            precise_amount=precise.normalize(),
            amount_cents=amount_cents,
            details={
                "minimum_commitment_cents": plan.minimum_commitment_cents,
                "prorated_minimum_cents": str(minimum.normalize()),
                "period_fees_cents": str(billed),
            },
        )


def _shift(instant: datetime, interval: str, sign: int) -> datetime:
    if interval == "weekly":
        return instant + timedelta(weeks=sign)
    months = _MONTHS[interval] * sign
    month0 = instant.month - 1 + months
    year, month = instant.year + month0 // 12, month0 % 12 + 1
    day = min(instant.day, _month_days(year, month))
    return instant.replace(year=year, month=month, day=day)


def _month_days(year: int, month: int) -> int:
    following = datetime(year + (month == 12), month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def _days(start: datetime, end: datetime) -> int:
    return round((end - start).total_seconds() / 86400)


def _local_day(instant: datetime) -> int:
    # Period boundaries are local midnights (UTC-12..UTC+12): +12 h lands on the local date.
    return (instant + timedelta(hours=12)).day
