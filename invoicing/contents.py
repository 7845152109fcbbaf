"""What an invoice holds beyond its fees: coupons, taxes and credits, computed exactly.

``compute_invoice_contents`` is a pure function of the rounded fees, the customer's
applied coupons (oldest first), the tax rates that apply to each fee, the customer's
credit-note credits and prepaid-credit wallet. It follows semantics.md:

1. fees, each already rounded to minor units → ``sub_total_cents``;
2. coupons, oldest first, each on what the previous ones left, never below zero;
   a coupon's amount is spread over the fees pro rata (unrounded shares);
3. taxes: per fee and rate on (fee − its coupon share), unrounded; the invoice's tax
   is the half-up rounded sum; the per-rate lines share that rounded total by largest
   remainder so they always add up to it;
4. credit-note credits, oldest credit note first;
5. prepaid credits from the wallet (never more money than the wallet holds);
6. the rest is the amount due, ``total_cents`` (zero is a valid invoice).

Amounts named ``*_cents`` are integer minor units; ``precise_*`` are exact ``Decimal``
minor units. No float anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from invoicing.errors import InvalidDraftError
from invoicing.money import currency_exponent, floor_to_int, round_half_up

__all__ = [
    "CouponToApply",
    "CouponUse",
    "CreditNoteCredit",
    "CreditNoteUse",
    "FeeContents",
    "FeeToInvoice",
    "InvoiceContents",
    "TaxLine",
    "TaxRate",
    "WalletBalance",
    "WalletUse",
    "compute_invoice_contents",
]

_PRECISION = 60  # significant digits for the unrounded shares and taxes
_CREDITS_PLACES = Decimal("1E-12")  # credits are stored to 12 decimal places
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class TaxRate:
    code: str
    name: str
    rate: Decimal  # percent: Decimal("20") is 20 %


@dataclass(frozen=True)
class FeeToInvoice:
    fee_key: str
    amount_cents: int
    taxes: tuple[TaxRate, ...] = ()  # the rates of the most specific level (see invoicing.taxes)


@dataclass(frozen=True)
class CouponToApply:
    """An applied coupon as it stands before this invoice."""

    applied_coupon_id: Any
    coupon_code: str
    coupon_name: str
    coupon_type: str  # "fixed_amount" | "percentage"
    frequency: str  # "once" | "recurring" | "forever"
    amount_cents: int | None = None  # fixed_amount: per invoice (recurring, forever) or in all (once)
    amount_currency: str | None = None
    percentage_rate: Decimal | None = None  # percentage: percent of what is left to discount
    amount_cents_remaining: int | None = None  # once + fixed_amount: what is left to use
    frequency_duration_remaining: int | None = None  # recurring: invoices left


@dataclass(frozen=True)
class CreditNoteCredit:
    credit_note_id: Any
    number: str
    balance_amount_cents: int


@dataclass(frozen=True)
class WalletBalance:
    wallet_id: Any
    currency: str
    rate_amount: Decimal  # major units of money per credit
    credits_balance: Decimal


@dataclass(frozen=True)
class CouponUse:
    coupon: CouponToApply
    amount_cents: int
    amount_cents_remaining: int | None  # after this invoice
    frequency_duration_remaining: int | None  # after this invoice
    terminated: bool


@dataclass(frozen=True)
class FeeContents:
    fee_key: str
    amount_cents: int
    precise_coupons_amount_cents: Decimal
    taxes: tuple[tuple[TaxRate, Decimal], ...]  # (rate, unrounded tax in minor units)

    @property
    def taxable_base_cents(self) -> Decimal:
        return self.amount_cents - self.precise_coupons_amount_cents

    @property
    def precise_taxes_amount_cents(self) -> Decimal:
        return sum((amount for _, amount in self.taxes), _ZERO)


@dataclass(frozen=True)
class TaxLine:
    tax_code: str
    tax_name: str
    tax_rate: Decimal
    taxable_base_cents: int
    amount_cents: int


@dataclass(frozen=True)
class CreditNoteUse:
    credit_note_id: Any
    number: str
    amount_cents: int


@dataclass(frozen=True)
class WalletUse:
    wallet_id: Any
    amount_cents: int
    credits: Decimal
    balance_after: Decimal


@dataclass(frozen=True)
class InvoiceContents:
    fees: tuple[FeeContents, ...]
    coupons: tuple[CouponUse, ...]
    taxes: tuple[TaxLine, ...]
    credit_notes: tuple[CreditNoteUse, ...]
    wallet: WalletUse | None
    sub_total_cents: int
    coupons_cents: int
    taxes_cents: int
    credit_notes_cents: int
    prepaid_credits_cents: int
    total_cents: int

    @property
    def credits_cents(self) -> int:
        return self.credit_notes_cents + self.prepaid_credits_cents


def compute_invoice_contents(
    currency: str,
    fees: Sequence[FeeToInvoice],
    coupons: Sequence[CouponToApply] = (),
    credit_notes: Sequence[CreditNoteCredit] = (),
    wallet: WalletBalance | None = None,
) -> InvoiceContents:
    """Apply coupons, taxes and credits to rounded fees, in the documented order."""
    exponent = currency_exponent(currency)
    for fee in fees:
        if isinstance(fee.amount_cents, bool) or not isinstance(fee.amount_cents, int):
            raise InvalidDraftError(f"fee {fee.fee_key!r}: amount_cents must be int minor units")
        if fee.amount_cents < 0:
            raise InvalidDraftError(f"fee {fee.fee_key!r}: amount_cents {fee.amount_cents} is negative")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        sub_total = sum(fee.amount_cents for fee in fees)
        shares, coupon_uses = _apply_coupons(currency, fees, coupons, sub_total)
        coupons_cents = sum(use.amount_cents for use in coupon_uses)
        fee_contents = tuple(
            FeeContents(
                fee_key=fee.fee_key,
                amount_cents=fee.amount_cents,
                precise_coupons_amount_cents=share,
                taxes=tuple(
                    (rate, (fee.amount_cents - share) * rate.rate / _HUNDRED) for rate in fee.taxes
                ),
            )
            for fee, share in zip(fees, shares, strict=True)
        )
        taxes_cents, tax_lines = _tax_lines(fee_contents)
        due = sub_total - coupons_cents + taxes_cents
        credit_note_uses: list[CreditNoteUse] = []
        for credit in credit_notes:
            used = min(credit.balance_amount_cents, due)
            if used > 0:
                credit_note_uses.append(CreditNoteUse(credit.credit_note_id, credit.number, used))
                due -= used
        credit_notes_cents = sum(use.amount_cents for use in credit_note_uses)
        wallet_use = _use_wallet(wallet, currency, exponent, due)
        prepaid = wallet_use.amount_cents if wallet_use else 0
        return InvoiceContents(
            fees=fee_contents,
            coupons=tuple(coupon_uses),
            taxes=tax_lines,
            credit_notes=tuple(credit_note_uses),
            wallet=wallet_use,
            sub_total_cents=sub_total,
            coupons_cents=coupons_cents,
            taxes_cents=taxes_cents,
            credit_notes_cents=credit_notes_cents,
            prepaid_credits_cents=prepaid,
            total_cents=due - prepaid,
        )


def _apply_coupons(
    currency: str, fees: Sequence[FeeToInvoice], coupons: Sequence[CouponToApply], sub_total: int
) -> tuple[list[Decimal], list[CouponUse]]:
    """Each coupon in order on what is left; returns each fee's share and the uses."""
    left = [Decimal(fee.amount_cents) for fee in fees]
    shares = [_ZERO for _ in fees]
    base = sub_total  # integer: coupons are whole minor units
    uses: list[CouponUse] = []
    for coupon in coupons:
        if base <= 0:
            break  # nothing left to discount: the coupon waits for the next invoice
        discount = _coupon_amount(coupon, currency, base)
        if discount <= 0:
            continue
        discount = min(discount, base)
        # Spread pro rata over what each fee has left; the last fee takes the rest so
        # the shares add up to the discount exactly.
        positive = [i for i, amount in enumerate(left) if amount > 0]
        left_total = sum((left[i] for i in positive), _ZERO)
        given = _ZERO
        for n, i in enumerate(positive):
            share = discount - given if n == len(positive) - 1 else discount * left[i] / left_total
            shares[i] += share
            left[i] -= share
            given += share
        base -= discount
        uses.append(_consume(coupon, discount))
    return shares, uses


def _coupon_amount(coupon: CouponToApply, currency: str, base: int) -> int:
    if coupon.coupon_type == "fixed_amount":
        if coupon.amount_currency != currency or coupon.amount_cents is None:
            return 0  # a fixed coupon only discounts invoices in its currency
        if coupon.frequency == "once":
            return coupon.amount_cents_remaining if coupon.amount_cents_remaining is not None else coupon.amount_cents
        return coupon.amount_cents
    if coupon.coupon_type == "percentage":
        if coupon.percentage_rate is None:
            return 0
        return round_half_up(base * coupon.percentage_rate / _HUNDRED)
    raise ValueError(f"unknown coupon_type {coupon.coupon_type!r}")


def _consume(coupon: CouponToApply, discount: int) -> CouponUse:
    remaining = coupon.amount_cents_remaining
    periods = coupon.frequency_duration_remaining
    if coupon.frequency == "once":
        if coupon.coupon_type == "fixed_amount":
            start = remaining if remaining is not None else (coupon.amount_cents or 0)
            remaining = start - discount
            terminated = remaining <= 0
        else:
            terminated = True
    elif coupon.frequency == "recurring":
        periods = (periods if periods is not None else 1) - 1
        terminated = periods <= 0
    else:  # forever
        terminated = False
    return CouponUse(coupon, discount, remaining, periods, terminated)


def _tax_lines(fees: Sequence[FeeContents]) -> tuple[int, tuple[TaxLine, ...]]:
    """Invoice tax = rounded sum of unrounded fee taxes; per-rate lines add up to it."""
    by_code: dict[str, tuple[TaxRate, Decimal, Decimal]] = {}
    for fee in fees:
        for rate, amount in fee.taxes:
            _, base, total = by_code.get(rate.code, (rate, _ZERO, _ZERO))
            by_code[rate.code] = (rate, base + fee.taxable_base_cents, total + amount)
    exact_total = sum((total for _, _, total in by_code.values()), _ZERO)
    taxes_cents = round_half_up(exact_total)
    # Largest remainder: floor each rate, hand the missing units to the largest
    # fractional parts (first listed wins a tie).
    floors = {code: floor_to_int(total) for code, (_, _, total) in by_code.items()}
    missing = taxes_cents - sum(floors.values())
    order = sorted(by_code, key=lambda code: by_code[code][2] - floors[code], reverse=True)
    for code in order[:missing]:
        floors[code] += 1
    lines = tuple(
        TaxLine(rate.code, rate.name, rate.rate, round_half_up(base), floors[code])
        for code, (rate, base, _) in by_code.items()
    )
    return taxes_cents, lines


def _use_wallet(wallet: WalletBalance | None, currency: str, exponent: int, due: int) -> WalletUse | None:
    if wallet is None or due <= 0 or wallet.currency != currency or wallet.credits_balance <= 0:
        return None
    cents_per_credit = wallet.rate_amount * (10**exponent)
    available = floor_to_int(wallet.credits_balance * cents_per_credit)
    used = min(available, due)
    if used <= 0:
        return None
    if used == available:
        credits = wallet.credits_balance  # empties the wallet exactly
    else:
        credits = min((used / cents_per_credit).quantize(_CREDITS_PLACES), wallet.credits_balance)
    return WalletUse(wallet.wallet_id, used, credits, wallet.credits_balance - credits)
