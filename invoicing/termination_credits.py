"""Credit notes for the days a subscription fee paid for after the subscription ended.

A pay-in-advance plan bills each period at its start. When the subscription then ends
inside that period — ``terminated_at`` / ``ending_at``, or a plan change (a newer
subscription naming it in ``previous_subscription_id``) — the days after the
termination day were paid for and will not be used. As Lago does by default
(``on_termination_credit_note: credit``), billhouse credits them: one credit note per
such fee, on the invoice that billed it, all of it as credit (no refund), which the
customer's next invoices consume. A termination known when the period was billed needs
nothing: the billing clock already prorated that fee.

Rules (docs/billing-clock.md, "Termination credit notes"), all days in the customer's
timezone, the same day-counting as the clock's proration:

- the fee *covered* the local days of its period from the trial's end on;
- *unused* days are the covered days from the subscription's end date on: the day
  after the termination day (the termination day is billed in full), or the plan
  change day (billed by the new plan); a fee wholly after the end is all unused;
- credit = (fee − its coupon share + its taxes) × unused ÷ covered, rounded half-up
  once — with no coupon and no tax, fee amount × unused ÷ covered — never more than
  the invoice still has creditable (``creditable_amounts``: earlier credit notes count);
- reason ``order_cancellation`` for a termination, ``order_change`` for a plan change
  (Lago's); idempotency key ``termination:<fee_key>``, so a fee is credited once
  whatever the number of closes; the note sends ``credit_note.created`` like any other.

A subscription is credited by the first close whose ``as_of`` reaches its end (the
local midnight starting its end date) — the close that issues its final invoice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from invoicing.credit_notes import CreditNote, create_credit_note, creditable_amounts
from invoicing.drafts import DraftSource
from invoicing.errors import (
    CreditNoteExceedsRemainingError,
    IdempotencyConflictError,
    TransactionStateError,
)
from invoicing.money import round_half_up

__all__ = [
    "IDEMPOTENCY_PREFIX",
    "SubscriptionEnd",
    "UnusedDays",
    "credit_unused_subscription_days",
    "read_subscription_ends",
    "termination_credit_cents",
    "unused_days",
]

logger = logging.getLogger(__name__)

IDEMPOTENCY_PREFIX = "termination:"


@dataclass(frozen=True)
class SubscriptionEnd:
    """When a subscription stops being billed, in its customer's local days."""

    external_subscription_id: str
    external_customer_id: str
    timezone: str  # IANA name
    end_date: date  # first local day no longer billed: termination day + 1, or the plan change day
    trial_end_date: date  # first local day after the trial (the start day when there is none)
    plan_change: bool  # ended by a newer subscription (upgrade / downgrade)

    @property
    def ended_at(self) -> datetime:
        """The UTC instant the subscription ends: local midnight starting ``end_date``."""
        return _local_midnight(self.end_date, self.timezone)

    @property
    def reason(self) -> str:
        return "order_change" if self.plan_change else "order_cancellation"


@dataclass(frozen=True)
class UnusedDays:
    first_unused_date: date
    last_date: date  # last local day the fee covered (inclusive)
    unused_days: int
    covered_days: int


def unused_days(end: SubscriptionEnd, period_start: datetime, period_end: datetime) -> UnusedDays:
    """The local days of a billed period [period_start, period_end) after the subscription's end."""
    zone = ZoneInfo(end.timezone)
    start_date = period_start.astimezone(zone).date()
    end_date = period_end.astimezone(zone).date()  # exclusive
    covered_from = max(start_date, end.trial_end_date)
    unused_from = max(end.end_date, covered_from)
    return UnusedDays(
        first_unused_date=unused_from,
        last_date=end_date - timedelta(days=1),
        unused_days=max((end_date - unused_from).days, 0),
        covered_days=max((end_date - covered_from).days, 0),
    )


def termination_credit_cents(worth_cents: Decimal, unused: int, covered: int) -> int:
    """``worth × unused ÷ covered`` in minor units, rounded half-up once (0 when nothing is unused)."""
    if unused <= 0 or covered <= 0:
        return 0
    with localcontext() as ctx:
        ctx.prec = 60
        return round_half_up(worth_cents * min(unused, covered) / Decimal(covered))


def read_subscription_ends(source: DraftSource, schema: str = "billhouse") -> list[SubscriptionEnd]:
    """Every subscription with an end (termination, ``ending_at`` or plan change), from the
    staging models the billing clock reads — the same rules as ``int_subscription_periods``:
    a plan change wins over ``terminated_at``, which wins over ``ending_at``."""
    successors = {
        row["previous_subscription_id"]: _utc(row["successor_at"])
        for row in source.query(
            f"select previous_subscription_id, min(subscription_at) as successor_at"
            f" from {schema}.stg_billhouse__subscriptions where previous_subscription_id is not null"
            f" group by previous_subscription_id"
        )
    }
    rows = source.query(
        "select subscriptions.external_subscription_id as external_subscription_id,"
        " subscriptions.external_customer_id as external_customer_id,"
        " subscriptions.subscription_at as subscription_at,"
        " subscriptions.terminated_at as terminated_at,"
        " subscriptions.ending_at as ending_at,"
        " customers.timezone as timezone,"
        " plans.trial_period as trial_period"
        f" from {schema}.stg_billhouse__subscriptions as subscriptions"
        f" inner join {schema}.stg_billhouse__customers as customers"
        " on subscriptions.external_customer_id = customers.external_customer_id"
        f" inner join {schema}.stg_billhouse__plans as plans"
        " on subscriptions.plan_code = plans.plan_code"
        " where subscriptions.terminated_at is not null or subscriptions.ending_at is not null"
        " or subscriptions.external_subscription_id in ("
        f"select previous_subscription_id from {schema}.stg_billhouse__subscriptions"
        " where previous_subscription_id is not null)"
        " order by external_subscription_id"
    )
    ends = []
    for row in rows:
        zone = ZoneInfo(row["timezone"] or "UTC")
        successor_at = successors.get(row["external_subscription_id"])
        ended = row["terminated_at"] if row["terminated_at"] is not None else row["ending_at"]
        if successor_at is not None:
            end_date = successor_at.astimezone(zone).date()
        elif ended is not None:
            end_date = _utc(ended).astimezone(zone).date() + timedelta(days=1)
        else:
            continue
        start_date = _utc(row["subscription_at"]).astimezone(zone).date()
        ends.append(
            SubscriptionEnd(
                external_subscription_id=row["external_subscription_id"],
                external_customer_id=row["external_customer_id"],
                timezone=zone.key,
                end_date=end_date,
                trial_end_date=start_date + timedelta(days=int(row["trial_period"] or 0)),
                plan_change=successor_at is not None,
            )
        )
    return ends


def credit_unused_subscription_days(
    conn: psycopg.Connection, ends: Iterable[SubscriptionEnd], as_of: datetime
) -> list[CreditNote]:
    """Issue the termination credit notes due by ``as_of``; return the ones issued now.

    Considers the subscriptions that ended by ``as_of`` and their subscription fees on
    finalized invoices whose period runs past the end and that have no termination
    credit note yet. Each note is its own transaction (``create_credit_note``); a re-run
    issues nothing. Needs a connection outside any transaction.
    """
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise TransactionStateError("credit_unused_subscription_days() runs its own transactions; commit first")
    as_of = as_of.astimezone(UTC)
    ended = {end.external_subscription_id: end for end in ends if end.ended_at <= as_of}
    if not ended:
        return []
    issued = []
    for fee in _fees_billed_past_the_end(conn, list(ended.values())):
        end = ended[fee["external_subscription_id"]]
        days = unused_days(end, fee["period_start"], fee["period_end"])
        worth = fee["amount_cents"] - fee["precise_coupons_amount_cents"] + fee["precise_taxes_amount_cents"]
        credit = termination_credit_cents(Decimal(worth), days.unused_days, days.covered_days)
        credit = min(credit, creditable_amounts(conn, fee["invoice_id"]).creditable_cents)
        if credit <= 0:
            continue
        note = _issue(conn, fee, end, days, credit)
        if note is not None:
            issued.append(note)
    return issued


def _fees_billed_past_the_end(conn: psycopg.Connection, ends: Sequence[SubscriptionEnd]) -> list[dict[str, Any]]:
    """Subscription fees of finalized invoices whose period ends after their subscription
    did and that carry no termination credit note yet, oldest invoice first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """
            SELECT f.fee_key, f.external_subscription_id, f.invoice_display_name, f.period_start,
                   f.period_end, f.amount_cents, f.precise_coupons_amount_cents,
                   f.precise_taxes_amount_cents, i.id AS invoice_id, i.number AS invoice_number
            FROM unnest(%s::text[], %s::timestamptz[]) AS ended (external_subscription_id, ended_at)
            JOIN invoice_fees f ON f.external_subscription_id = ended.external_subscription_id
            JOIN invoices i ON i.id = f.invoice_id
            WHERE f.kind = 'subscription' AND f.amount_cents > 0 AND i.status = 'finalized'
              AND f.period_end > ended.ended_at
              AND NOT EXISTS (SELECT 1 FROM credit_notes n WHERE n.idempotency_key = %s || f.fee_key)
            ORDER BY i.issuing_date, i.number, f.fee_key
            """,
            (
                [end.external_subscription_id for end in ends],
                [end.ended_at for end in ends],
                IDEMPOTENCY_PREFIX,
            ),
        ).fetchall()


def _issue(
    conn: psycopg.Connection, fee: dict[str, Any], end: SubscriptionEnd, days: UnusedDays, credit: int
) -> CreditNote | None:
    cause = "plan change" if end.plan_change else "termination"
    description = (
        f"{fee['invoice_display_name']} ({end.external_subscription_id}): unused days after {cause},"
        f" {days.first_unused_date.isoformat()} to {days.last_date.isoformat()}"
        f" ({days.unused_days} of {days.covered_days} days)"
    )
    try:
        note = create_credit_note(
            conn,
            fee["invoice_id"],
            idempotency_key=IDEMPOTENCY_PREFIX + fee["fee_key"],
            credit_amount_cents=credit,
            reason=end.reason,
            description=description,
        )
    except (IdempotencyConflictError, CreditNoteExceedsRemainingError) as exc:
        # a concurrent close issued it, or a credit note issued meanwhile lowered what
        # remains: the next close looks again
        logger.warning("termination credit note for %s on %s not issued: %s", fee["fee_key"], fee["invoice_number"], exc)
        return None
    logger.info("credit note %s: %s", note.number, description)
    return note


def _local_midnight(day: date, timezone_name: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(timezone_name)).astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
