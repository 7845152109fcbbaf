"""Invoice drafts as the warehouse hands them to invoicing.

dbt builds ``fct_invoice_drafts`` (one row per customer, currency and issuing date) and
``fct_invoice_draft_fees`` (one row per fee). These records are what crosses from the
warehouse into Python; amounts are already rounded to integer minor units there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True)
class DraftFee:
    fee_key: str  # stable id of the fee: subscription, charge (or "subscription"), period
    kind: str  # "subscription" | "charge"
    external_subscription_id: str
    plan_code: str
    billable_metric_code: str | None  # None for the subscription fee
    charge_model: str | None
    invoice_display_name: str
    period_start: datetime  # UTC, inclusive
    period_end: datetime  # UTC, exclusive
    units: Decimal
    unit_amount: Decimal  # major units per unit (the plan amount for a subscription fee)
    precise_amount: Decimal  # major units, unrounded
    amount_cents: int  # minor units, rounded half-up from precise_amount


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


class DraftSource(Protocol):
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...


def read_invoice_drafts(source: DraftSource, schema: str = "billhouse") -> list[InvoiceDraft]:
    """All drafts the last dbt build produced, with their fees, in a stable order."""
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
            )
        )
    return drafts


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _decimal(value: Any) -> Decimal:
    # Strip the warehouse's 12 trailing zeros for display; the value is unchanged.
    number = Decimal(value)
    return number.quantize(Decimal(1)) if number == number.to_integral_value() else number.normalize()
