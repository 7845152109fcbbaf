"""Commercial terms in the catalog YAML: taxes, coupons, add-ons, wallets, payment terms.

The pricing catalog (``billhouse.catalog``) says what things cost; these sections say
what is discounted, taxed and prepaid, in Lago's names. They live in the same
document and are read from it separately (``parse_commercial_terms``), then written
to the ledger (``apply_commercial_terms``), where finalization reads them::

    taxes:
      - {code: vat_fr, name: "VAT 20%", rate: "20", applied_to_organization: true}
    coupons:
      - {code: welcome, name: Welcome, coupon_type: fixed_amount, amount_cents: 2000,
         amount_currency: EUR, frequency: recurring, frequency_duration: 3}
    add_ons:
      - {code: setup, name: Setup fee, amount_cents: 15000, amount_currency: EUR}
    plans:
      - code: pro
        tax_codes: [vat_reduced]            # plan level
        charges:
          - {billable_metric_code: api_calls, tax_codes: [vat_zero]}   # charge level
    customers:
      - external_id: cus_1
        net_payment_term: 30                # days to the due date
        tax_codes: [vat_de]                 # customer level
        applied_coupons: [welcome]          # or {coupon_code, amount_cents, ...} overrides
        wallet: {rate_amount: "1", paid_credits: "50", granted_credits: "10"}

Applying is idempotent: taxes, coupons and add-ons by code (a changed definition is
refused: a new rate or price needs a new code), coupon applications by customer and
coupon, a wallet's initial credits by a key derived from the customer. Rates and
credits are decimal strings (a float is refused), amounts ``*_cents`` integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from billhouse.errors import CatalogError
from invoicing.add_ons import AddOn, create_add_on
from invoicing.coupons import COUPON_TYPES, FREQUENCIES, Coupon, apply_coupon, create_coupon
from invoicing.customers import set_net_payment_term
from invoicing.taxes import attach_tax, create_tax
from invoicing.wallets import create_wallet, top_up_wallet

__all__ = [
    "AppliedCouponTerms",
    "CommercialTerms",
    "CustomerTerms",
    "TaxTerms",
    "WalletTerms",
    "apply_commercial_terms",
    "parse_commercial_terms",
]


@dataclass(frozen=True)
class TaxTerms:
    code: str
    name: str
    rate: Decimal
    applied_to_organization: bool = False
    description: str | None = None


@dataclass(frozen=True)
class AppliedCouponTerms:
    coupon_code: str
    amount_cents: int | None = None
    amount_currency: str | None = None
    percentage_rate: Decimal | None = None
    frequency: str | None = None
    frequency_duration: int | None = None


@dataclass(frozen=True)
class WalletTerms:
    rate_amount: Decimal
    paid_credits: Decimal = Decimal(0)
    granted_credits: Decimal = Decimal(0)
    name: str | None = None


@dataclass(frozen=True)
class CustomerTerms:
    external_id: str
    currency: str | None
    net_payment_term: int | None = None
    tax_codes: tuple[str, ...] = ()
    applied_coupons: tuple[AppliedCouponTerms, ...] = ()
    wallet: WalletTerms | None = None


@dataclass(frozen=True)
class CommercialTerms:
    taxes: tuple[TaxTerms, ...] = ()
    coupons: tuple[Coupon, ...] = ()
    add_ons: tuple[AddOn, ...] = ()
    plan_tax_codes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    charge_tax_codes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # charge_id -> codes
    customers: tuple[CustomerTerms, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.taxes or self.coupons or self.add_ons or self.plan_tax_codes
                    or self.charge_tax_codes or any(_has_terms(c) for c in self.customers))


def parse_commercial_terms(document: dict[str, Any], source: str = "<catalog>") -> CommercialTerms:
    """Read the commercial-terms sections of a catalog document (other keys are ignored)."""
    r = _Reader(source)
    taxes = tuple(r.tax(i, t) for i, t in enumerate(r.items(document, "taxes", source)))
    r.unique([t.code for t in taxes], "taxes")
    tax_codes = {t.code for t in taxes}
    coupons = tuple(r.coupon(i, c) for i, c in enumerate(r.items(document, "coupons", source)))
    r.unique([c.code for c in coupons], "coupons")
    add_ons = tuple(r.add_on(i, a) for i, a in enumerate(r.items(document, "add_ons", source)))
    r.unique([a.code for a in add_ons], "add_ons")
    plan_taxes: dict[str, tuple[str, ...]] = {}
    charge_taxes: dict[str, tuple[str, ...]] = {}
    for i, plan in enumerate(r.items(document, "plans", source)):
        code = plan.get("code") if isinstance(plan, dict) else None
        if not isinstance(code, str):
            continue  # billhouse.catalog reports a plan without a code
        where = f"{source}: plan '{code}'"
        if plan.get("tax_codes") is not None:
            plan_taxes[code] = r.codes(plan, "tax_codes", where, tax_codes)
        for j, charge in enumerate(plan.get("charges") or []):
            if isinstance(charge, dict) and charge.get("tax_codes") is not None:
                # the charge id billhouse.catalog gives: "<plan code>/<index>"
                charge_taxes[f"{code}/{j}"] = r.codes(charge, "tax_codes", f"{where} charge[{j}]", tax_codes)
    coupon_codes = {c.code for c in coupons}
    customers = tuple(
        r.customer(i, c, tax_codes, coupon_codes) for i, c in enumerate(r.items(document, "customers", source))
        if isinstance(c, dict) and isinstance(c.get("external_id"), str)
    )
    return CommercialTerms(taxes, coupons, add_ons, plan_taxes, charge_taxes, customers)


def apply_commercial_terms(
    conn: psycopg.Connection, terms: CommercialTerms, billing_entity: str = "default"
) -> None:
    """Write the terms to the ledger, idempotently (see the module docstring)."""
    for tax in terms.taxes:
        create_tax(conn, tax.code, tax.name, tax.rate, tax.description)
        if tax.applied_to_organization:
            attach_tax(conn, tax.code, "billing_entity", billing_entity)
    for coupon in terms.coupons:
        create_coupon(conn, coupon)
    for add_on in terms.add_ons:
        create_add_on(conn, add_on)
    for plan_code, codes in terms.plan_tax_codes.items():
        for code in codes:
            attach_tax(conn, code, "plan", plan_code)
    for charge_id, codes in terms.charge_tax_codes.items():
        for code in codes:
            attach_tax(conn, code, "charge", charge_id)
    for customer in terms.customers:
        if customer.net_payment_term is not None:
            set_net_payment_term(conn, customer.external_id, customer.net_payment_term)
        for code in customer.tax_codes:
            attach_tax(conn, code, "customer", customer.external_id)
        for applied in customer.applied_coupons:
            apply_coupon(
                conn, customer.external_id, applied.coupon_code,
                idempotency_key=f"catalog/{customer.external_id}/{applied.coupon_code}",
                amount_cents=applied.amount_cents, amount_currency=applied.amount_currency,
                percentage_rate=applied.percentage_rate, frequency=applied.frequency,
                frequency_duration=applied.frequency_duration,
            )
        if customer.wallet is not None:
            if customer.currency is None:
                raise CatalogError(f"customer '{customer.external_id}'", "currency", "is required for a wallet")
            wallet = customer.wallet
            create_wallet(conn, customer.external_id, customer.currency, wallet.rate_amount, wallet.name)
            if wallet.paid_credits or wallet.granted_credits:
                top_up_wallet(
                    conn, customer.external_id, idempotency_key=f"catalog/{customer.external_id}/wallet/initial",
                    paid_credits=wallet.paid_credits, granted_credits=wallet.granted_credits,
                )


def _has_terms(customer: CustomerTerms) -> bool:
    return bool(customer.net_payment_term is not None or customer.tax_codes or customer.applied_coupons
                or customer.wallet)


class _Reader:
    """Field readers raising ``CatalogError`` that name the file, the object and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def items(self, document: dict[str, Any], key: str, where: str) -> list[Any]:
        value = document.get(key) or []
        if not isinstance(value, list):
            raise CatalogError(where, key, "must be a list")
        return value

    def unique(self, codes: list[str], section: str) -> None:
        seen: set[str] = set()
        for code in codes:
            if code in seen:
                raise CatalogError(f"{self.source}: {section}", "code", f"{code!r} appears twice")
            seen.add(code)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise CatalogError(where, "(item)", "must be a mapping")
        return value

    def text(self, obj: dict[str, Any], key: str, where: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            raise CatalogError(where, key, "is required (a non-empty string)")
        return value

    def decimal(self, obj: dict[str, Any], key: str, where: str, required: bool = True) -> Decimal | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise CatalogError(where, key, "is required")
            return None
        if isinstance(value, (float, bool)):
            raise CatalogError(where, key, f"write decimals as strings (\"{value}\"), not YAML floats")
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise CatalogError(where, key, f"is not a decimal: {value!r}") from exc
        if not number.is_finite():
            raise CatalogError(where, key, f"is not finite: {value!r}")
        return number

    def integer(self, obj: dict[str, Any], key: str, where: str, required: bool = True) -> int | None:
        value = obj.get(key)
        if value is None:
            if required:
                raise CatalogError(where, key, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CatalogError(where, key, f"must be a non-negative integer, got {value!r}")
        return value

    def codes(self, obj: dict[str, Any], key: str, where: str, known: set[str]) -> tuple[str, ...]:
        value = obj.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CatalogError(where, key, "must be a list of codes")
        for code in value:
            if code not in known:
                raise CatalogError(where, key, f"{code!r} is not defined in taxes")
        return tuple(value)

    def tax(self, index: int, t: Any) -> TaxTerms:
        t = self.mapping(t, f"{self.source}: taxes[{index}]")
        code = self.text(t, "code", f"{self.source}: taxes[{index}]")
        where = f"{self.source}: tax '{code}'"
        rate = self.decimal(t, "rate", where)
        assert rate is not None
        if not Decimal(0) <= rate <= Decimal(100):
            raise CatalogError(where, "rate", f"must be a percentage from 0 to 100, got {rate}")
        return TaxTerms(code, t.get("name") or code, rate, bool(t.get("applied_to_organization", False)),
                        t.get("description"))

    def coupon(self, index: int, c: Any) -> Coupon:
        c = self.mapping(c, f"{self.source}: coupons[{index}]")
        code = self.text(c, "code", f"{self.source}: coupons[{index}]")
        where = f"{self.source}: coupon '{code}'"
        coupon_type = c.get("coupon_type")
        if coupon_type not in COUPON_TYPES:
            raise CatalogError(where, "coupon_type", f"must be one of {', '.join(COUPON_TYPES)}; got {coupon_type!r}")
        frequency = c.get("frequency", "once")
        if frequency not in FREQUENCIES:
            raise CatalogError(where, "frequency", f"must be one of {', '.join(FREQUENCIES)}; got {frequency!r}")
        fixed = coupon_type == "fixed_amount"
        expiration = c.get("expiration_at")
        if expiration is not None and not isinstance(expiration, datetime):
            try:
                expiration = datetime.fromisoformat(str(expiration).replace("Z", "+00:00"))
            except ValueError as exc:
                raise CatalogError(where, "expiration_at", f"is not an ISO 8601 instant: {expiration!r}") from exc
        if expiration is not None and expiration.tzinfo is None:
            raise CatalogError(where, "expiration_at", "needs a UTC offset (e.g. 2026-12-31T23:59:59Z)")
        return Coupon(
            code=code,
            name=c.get("name") or code,
            coupon_type=coupon_type,
            frequency=frequency,
            amount_cents=self.integer(c, "amount_cents", where) if fixed else None,
            amount_currency=str(self.text(c, "amount_currency", where)).upper() if fixed else None,
            percentage_rate=None if fixed else self.decimal(c, "percentage_rate", where),
            frequency_duration=self.integer(c, "frequency_duration", where) if frequency == "recurring" else None,
            reusable=bool(c.get("reusable", False)),
            expiration_at=expiration,
        )

    def add_on(self, index: int, a: Any) -> AddOn:
        a = self.mapping(a, f"{self.source}: add_ons[{index}]")
        code = self.text(a, "code", f"{self.source}: add_ons[{index}]")
        where = f"{self.source}: add_on '{code}'"
        amount = self.integer(a, "amount_cents", where)
        assert amount is not None
        return AddOn(code, a.get("name") or code, amount, self.text(a, "amount_currency", where).upper(),
                     a.get("invoice_display_name"), a.get("description"))

    def customer(self, index: int, c: dict[str, Any], tax_codes: set[str], coupon_codes: set[str]) -> CustomerTerms:
        external_id = c["external_id"]
        where = f"{self.source}: customer '{external_id}'"
        applied = []
        for j, item in enumerate(c.get("applied_coupons") or []):
            if isinstance(item, str):
                item = {"coupon_code": item}
            item = self.mapping(item, f"{where} applied_coupons[{j}]")
            code = self.text(item, "coupon_code", f"{where} applied_coupons[{j}]")
            if code not in coupon_codes:
                raise CatalogError(f"{where} applied_coupons[{j}]", "coupon_code", f"{code!r} is not defined in coupons")
            applied.append(AppliedCouponTerms(
                coupon_code=code,
                amount_cents=self.integer(item, "amount_cents", where, required=False),
                amount_currency=item.get("amount_currency"),
                percentage_rate=self.decimal(item, "percentage_rate", where, required=False),
                frequency=item.get("frequency"),
                frequency_duration=self.integer(item, "frequency_duration", where, required=False),
            ))
        wallet = None
        if c.get("wallet") is not None:
            w = self.mapping(c["wallet"], f"{where} wallet")
            wallet = WalletTerms(
                rate_amount=self.decimal(w, "rate_amount", f"{where} wallet", required=False) or Decimal(1),
                paid_credits=self.decimal(w, "paid_credits", f"{where} wallet", required=False) or Decimal(0),
                granted_credits=self.decimal(w, "granted_credits", f"{where} wallet", required=False) or Decimal(0),
                name=w.get("name"),
            )
        currency = c.get("currency")
        return CustomerTerms(
            external_id=external_id,
            currency=currency.upper() if isinstance(currency, str) else None,
            net_payment_term=self.integer(c, "net_payment_term", where, required=False),
            tax_codes=self.codes(c, "tax_codes", where, tax_codes),
            applied_coupons=tuple(applied),
            wallet=wallet,
        )
