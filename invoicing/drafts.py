"""Invoice drafts as the warehouse hands them to invoicing.

dbt builds ``fct_invoice_drafts`` (one row per customer, currency and issuing date) and
``fct_invoice_draft_fees`` (one row per fee). These records are what crosses from the
warehouse into Python; amounts are already rounded to integer minor units there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


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
