"""Invoice drafts as the warehouse hands them to invoicing.

dbt builds ``fct_invoice_drafts`` (one row per customer, currency and issuing date) and
``fct_invoice_draft_fees`` (one row per fee). These records are what crosses from the
warehouse into Python; amounts are already rounded to integer minor units there.

``read_invoice_drafts`` also adds each plan's minimum-commitment true-up fee (see
``invoicing.commitments``), reading the plans from ``stg_billhouse__plans``. A fee may
carry rating ``details`` (JSON; a graduated fee lists its ``tiers``) that the PDF
prints; add-on fees (one-off invoices, ``invoicing.add_ons``) have no subscription.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from invoicing.commitments import PlanCommitment


# a late-usage adjustment's fee key: <the adjusted fee's key>/adjustment/<...>
# (models/rating/int_late_adjustment_fees.sql)
ADJUSTMENT_KEY = "/adjustment/"


def adjusted_fee_key(fee_key: str) -> str:
    """The fee a late-usage adjustment corrects; any other fee's own key."""
    return fee_key.split(ADJUSTMENT_KEY, 1)[0]


@dataclass(frozen=True)
class DraftFee:
    fee_key: str  # stable id of the fee: subscription, charge (or "subscription"), period
    kind: str  # "subscription" | "charge" | "commitment" | "add_on"
    external_subscription_id: str | None  # None for an add-on fee
    plan_code: str | None  # None for an add-on fee
    billable_metric_code: str | None  # None for the subscription fee
    charge_model: str | None
    invoice_display_name: str
    period_start: datetime  # UTC, inclusive
    period_end: datetime  # UTC, exclusive
    units: Decimal
    unit_amount: Decimal  # major units per unit (the plan amount for a subscription fee)
    precise_amount: Decimal  # major units, unrounded
    amount_cents: int  # minor units, rounded half-up from precise_amount
    charge_id: str | None = None  # the charge the fee rates (charge-level taxes)
    add_on_code: str | None = None  # the add-on of an add_on fee (add-on-level taxes)
    details: dict[str, Any] | None = None  # rating details, e.g. {"tiers": [...]}


@dataclass(frozen=True)
class EventsRead:
    """Which events a draft was built from (ClickHouse): every event of the events table
    with this UUID up to this insert block number."""

    through_block: int
    table_uuid: str


@dataclass(frozen=True)
class InvoiceDraft:
    invoice_key: str  # idempotency key: customer, currency, issuing date
    external_customer_id: str
    customer_name: str
    currency: str  # ISO 4217
    currency_exponent: int  # 2 for EUR/USD, 0 for JPY
    issuing_date: date
    period_start: datetime  # earliest fee period start
    period_end: datetime  # latest fee period end
    sub_total_cents: int
    total_cents: int
    fees: tuple[DraftFee, ...] = field(default_factory=tuple)
    invoice_type: str = "subscription"  # "subscription" | "one_off" (add-ons only)
    events_read: EventsRead | None = None  # None on PostgreSQL
    # why the close holds this draft instead of issuing it (a fee out of range), or None
    held_reason: str | None = None


class DraftSource(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


def read_invoice_drafts(source: DraftSource, schema: str = "billhouse") -> list[InvoiceDraft]:
    """All drafts the last dbt build produced, with their fees, in a stable order."""
    rating_details = read_rating_details(source, schema)
    fees_by_invoice: dict[str, list[DraftFee]] = {}
    for row in source.query(
        f"select * from {schema}.fct_invoice_draft_fees"
        " order by invoice_key, external_subscription_id, period_start, sort_order, fee_key"
    ):
        fees_by_invoice.setdefault(row["invoice_key"], []).append(
            DraftFee(
                fee_key=row["fee_key"],
                kind=row["fee_kind"],
                external_subscription_id=row["external_subscription_id"],
                plan_code=row["plan_code"],
                billable_metric_code=row["billable_metric_code"],
                charge_model=row["charge_model"],
                invoice_display_name=row["invoice_display_name"],
                period_start=_utc(row["period_start"]),
                period_end=_utc(row["period_end"]),
                units=_decimal(row["units"]),
                unit_amount=_decimal(row["unit_amount"]),
                precise_amount=_decimal(row["precise_amount"]),
                amount_cents=int(row["amount_cents"]),
                charge_id=row.get("charge_id"),
                details=_details(row.get("details")) or rating_details.get(row["fee_key"]),
            )
        )
    drafts = []
    for row in source.query(f"select * from {schema}.fct_invoice_drafts order by issuing_date, invoice_key"):
        drafts.append(
            InvoiceDraft(
                invoice_key=row["invoice_key"],
                external_customer_id=row["external_customer_id"],
                customer_name=row["customer_name"],
                currency=row["currency"],
                currency_exponent=int(row["currency_exponent"]),
                issuing_date=row["issuing_date"],
                period_start=_utc(row["period_start"]),
                period_end=_utc(row["period_end"]),
                sub_total_cents=int(row["sub_total_cents"]),
                total_cents=int(row["total_cents"]),
                fees=tuple(fees_by_invoice.get(row["invoice_key"], ())),
                events_read=_events_read(row),
                held_reason=row.get("held_reason") or None,
            )
        )
    from invoicing.commitments import add_commitment_true_ups

    return add_commitment_true_ups(drafts, read_plan_commitments(source, schema))


def _events_read(row: dict[str, Any]) -> EventsRead | None:
    if row.get("events_through_block") is None or not row.get("events_table_uuid"):
        return None
    return EventsRead(int(row["events_through_block"]), str(row["events_table_uuid"]))


def read_plan_commitments(source: DraftSource, schema: str = "billhouse") -> dict[str, PlanCommitment]:
    """Plans with a minimum commitment, by code, from ``stg_billhouse__plans``."""
    from invoicing.commitments import PlanCommitment

    rows = source.query(
        "select plan_code, plan_interval, amount_cents, pay_in_advance, minimum_commitment_cents"
        f" from {schema}.stg_billhouse__plans where minimum_commitment_cents > 0"
    )
    return {
        row["plan_code"]: PlanCommitment(
            plan_code=row["plan_code"],
            minimum_commitment_cents=int(row["minimum_commitment_cents"]),
            interval=row["plan_interval"],
            amount_cents=int(row["amount_cents"] or 0),
            pay_in_advance=bool(row["pay_in_advance"]),
        )
        for row in rows
    }


def read_rating_details(source: DraftSource, schema: str = "billhouse") -> dict[str, dict[str, Any]]:
    """Per fee key: the filter it prices (``filter``: key -> accepted values), its group
    (``group``: key -> value), the tier breakdown of tiered models (``tiers``), the free
    events of a percentage fee, and ``true_up`` for a charge-minimum true-up."""
    details: dict[str, dict[str, Any]] = {}
    filters: dict[tuple[str, int], dict[str, list[str]]] = {}
    for row in source.query(
        f"select charge_id, filter_index, property_key, accepted_value"
        f" from {schema}.stg_billhouse__charge_filter_values order by charge_id, filter_index, property_key, accepted_value"
    ):
        values = filters.setdefault((row["charge_id"], int(row["filter_index"])), {})
        values.setdefault(row["property_key"], []).append(row["accepted_value"])
    for row in source.query(
        f"select fee_key, charge_id, filter_index, group_key, is_true_up"
        f" from {schema}.fct_invoice_draft_fees where fee_kind = 'charge'"
    ):
        entry: dict[str, Any] = {}
        if row["is_true_up"]:
            entry["true_up"] = True
        elif int(row["filter_index"]) >= 0:
            entry["filter"] = filters.get((row["charge_id"], int(row["filter_index"])), {})
        if row["group_key"]:
            entry["group"] = dict(part.split("=", 1) for part in row["group_key"].split(", "))
        if entry:
            details[row["fee_key"]] = entry
    for row in source.query(
        f"select bucket_key, range_index, from_value, to_value, per_unit_amount, rate, flat_amount,"
        f" tier_units, tier_amount from {schema}.int_charge_fee_tiers order by bucket_key, range_index"
    ):
        details.setdefault(row["bucket_key"], {}).setdefault("tiers", []).append(
            {
                "from_value": str(_decimal(row["from_value"])),
                "to_value": None if row["to_value"] is None else str(_decimal(row["to_value"])),
                "per_unit_amount": None if row["per_unit_amount"] is None else str(_decimal(row["per_unit_amount"])),
                "rate": None if row["rate"] is None else str(_decimal(row["rate"])),
                "flat_amount": str(_decimal(row["flat_amount"])),
                "units": str(_decimal(row["tier_units"])),
                "amount": str(_decimal(row["tier_amount"])),
            }
        )
    for row in source.query(
        f"select bucket_key, sum(is_free) as free_events, count(*) as events"
        f" from {schema}.int_percentage_event_amounts group by bucket_key"
    ):
        details.setdefault(row["bucket_key"], {}).update(
            {"free_events": int(row["free_events"]), "paid_events": int(row["events"]) - int(row["free_events"])}
        )
    return details


def _details(value: Any) -> dict[str, Any] | None:
    if value is None or value == "" or value == {}:
        return None
    parsed = json.loads(value, parse_float=Decimal) if isinstance(value, (str, bytes)) else value
    return parsed or None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _decimal(value: Any) -> Decimal:
    # Strip the warehouse's 12 trailing zeros for display; the value is unchanged.
    number = Decimal(value)
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number.normalize()
