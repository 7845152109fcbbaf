"""Coupons, taxes, credits and commitments as pure rules, on hand-computed invoices.

No database: ``compute_invoice_contents`` and ``add_commitment_true_ups`` are pure.
Every expected figure below was worked out by hand (the arithmetic is in the
comments); the ledger tests (test_invoice_contents.py) check the same rules end to end.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from invoicing.commitments import PlanCommitment, add_commitment_true_ups, prorate_ratio
from invoicing.contents import (
    CouponToApply,
    CreditNoteCredit,
    FeeToInvoice,
    TaxRate,
    WalletBalance,
    compute_invoice_contents,
)
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import InvalidDraftError

VAT20 = TaxRate("vat_20", "VAT 20%", Decimal("20"))
VAT10 = TaxRate("vat_10", "VAT 10%", Decimal("10"))
JCT10 = TaxRate("jct_10", "Consumption tax 10%", Decimal("10"))


def fixed(code: str, cents: int, frequency: str = "once", currency: str = "EUR", **kw: object) -> CouponToApply:
    return CouponToApply(code, code, code, "fixed_amount", frequency, amount_cents=cents,
                         amount_currency=currency, **kw)  # type: ignore[arg-type]


def percent(code: str, rate: str, frequency: str = "once", **kw: object) -> CouponToApply:
    return CouponToApply(code, code, code, "percentage", frequency, percentage_rate=Decimal(rate), **kw)  # type: ignore[arg-type]


def test_coupon_tax_and_wallet_on_one_invoice() -> None:
    # fees 10000 (VAT 20 %) + 2550 (VAT 10 %) = 12550; fixed coupon 2000 spread pro rata:
    # 2000 x 10000/12550 = 1593.6254980...  and 406.3745019...
    # taxes (10000 - 1593.6254980) x 20 % = 1681.2749003...; (2550 - 406.3745019) x 10 % = 214.3625498...
    # invoice tax = round(1895.6374501...) = 1896; per rate by largest remainder: 1681 + 215
    # due 12550 - 2000 + 1896 = 12446; wallet: 100 credits x 0.50 EUR = 5000 -> due 7446
    contents = compute_invoice_contents(
        "EUR",
        [FeeToInvoice("sub", 10000, (VAT20,)), FeeToInvoice("api", 2550, (VAT10,))],
        coupons=[fixed("c2000", 2000, "recurring", frequency_duration_remaining=3)],
        wallet=WalletBalance("w", "EUR", Decimal("0.5"), Decimal("100")),
    )
    assert (contents.sub_total_cents, contents.coupons_cents, contents.taxes_cents) == (12550, 2000, 1896)
    assert (contents.prepaid_credits_cents, contents.total_cents) == (5000, 7446)
    sub, api = contents.fees
    assert sub.precise_coupons_amount_cents + api.precise_coupons_amount_cents == 2000
    assert str(sub.precise_coupons_amount_cents)[:14] == "1593.625498007"
    assert str(api.precise_taxes_amount_cents)[:13] == "214.362549800"
    assert [(t.tax_code, t.taxable_base_cents, t.amount_cents) for t in contents.taxes] == [
        ("vat_20", 8406, 1681), ("vat_10", 2144, 215)
    ]
    (use,) = contents.coupons
    assert (use.amount_cents, use.frequency_duration_remaining, use.terminated) == (2000, 2, False)
    assert contents.wallet is not None
    assert (contents.wallet.credits, contents.wallet.balance_after) == (Decimal("100"), Decimal("0"))


def test_full_coupon_gives_a_zero_invoice_and_leaves_the_wallet_alone() -> None:
    # 100 % coupon: 4900 + 123 = 5023 discounted to 0; tax on 0 is 0; nothing to take from the wallet
    contents = compute_invoice_contents(
        "EUR",
        [FeeToInvoice("sub", 4900, (VAT20,)), FeeToInvoice("api", 123, (VAT20,))],
        coupons=[percent("all", "100")],
        wallet=WalletBalance("w", "EUR", Decimal(1), Decimal(10)),
    )
    assert (contents.coupons_cents, contents.taxes_cents, contents.total_cents) == (5023, 0, 0)
    assert contents.wallet is None and contents.prepaid_credits_cents == 0
    assert contents.coupons[0].terminated
    assert [t.amount_cents for t in contents.taxes] == [0]


def test_taxes_on_a_jpy_invoice_round_to_whole_yen() -> None:
    # 9800 + 617 = 10417 yen; 10 % = 1041.7 -> 1042 yen (exponent 0: minor unit = 1 yen)
    contents = compute_invoice_contents(
        "JPY", [FeeToInvoice("sub", 9800, (JCT10,)), FeeToInvoice("api", 617, (JCT10,))]
    )
    assert (contents.taxes_cents, contents.total_cents) == (1042, 11459)
    assert [(t.taxable_base_cents, t.amount_cents) for t in contents.taxes] == [(10417, 1042)]


def test_invoice_tax_is_the_rounded_sum_of_unrounded_fee_taxes() -> None:
    # three fees of 5 cents at 10 %: 0.5 each; per fee rounding would give 3 x 1 = 3,
    # the rule gives round(1.5) = 2
    contents = compute_invoice_contents("EUR", [FeeToInvoice(k, 5, (VAT10,)) for k in "abc"])
    assert contents.taxes_cents == 2 and contents.total_cents == 17


@pytest.mark.parametrize(
    ("coupons", "coupons_cents", "comment"),
    [
        # oldest first: 10 % of 10000 = 1000, then 500 of what is left -> 1500
        ([percent("p10", "10", "recurring", frequency_duration_remaining=2), fixed("f500", 500, "forever")], 1500,
         "percentage then fixed"),
        # fixed first: 500, then 10 % of 9500 = 950 -> 1450
        ([fixed("f500", 500, "forever"), percent("p10", "10", "recurring", frequency_duration_remaining=2)], 1450,
         "fixed then percentage"),
        # never below zero: 8000 + 8000 on 10000 -> 8000 + 2000
        ([fixed("a", 8000), fixed("b", 8000)], 10000, "capped at the subtotal"),
        # a USD coupon does not discount a EUR invoice
        ([fixed("usd", 500, currency="USD")], 0, "other currency"),
        # 33.333 % of 10000 = 3333.3 -> 3333
        ([percent("third", "33.333")], 3333, "percentage rounds half-up"),
    ],
)
def test_coupons_apply_oldest_first_on_what_is_left(coupons: list[CouponToApply], coupons_cents: int, comment: str) -> None:
    contents = compute_invoice_contents("EUR", [FeeToInvoice("sub", 10000)], coupons=coupons)
    assert contents.coupons_cents == coupons_cents, comment
    assert contents.total_cents == 10000 - coupons_cents


def test_once_fixed_coupon_larger_than_the_invoice_carries_its_remainder() -> None:
    first = compute_invoice_contents("EUR", [FeeToInvoice("a", 3000)], coupons=[fixed("big", 5000)])
    (use,) = first.coupons
    assert (use.amount_cents, use.amount_cents_remaining, use.terminated, first.total_cents) == (3000, 2000, False, 0)
    carried = fixed("big", 5000, amount_cents_remaining=use.amount_cents_remaining)
    second = compute_invoice_contents("EUR", [FeeToInvoice("b", 3000)], coupons=[carried])
    (use,) = second.coupons
    assert (use.amount_cents, use.amount_cents_remaining, use.terminated, second.total_cents) == (2000, 0, True, 1000)


def test_a_zero_invoice_does_not_use_up_a_coupon() -> None:
    contents = compute_invoice_contents("EUR", [FeeToInvoice("a", 0)], coupons=[percent("p", "50", "recurring",
                                                                                          frequency_duration_remaining=1)])
    assert contents.coupons == () and contents.total_cents == 0


def test_recurring_coupon_ends_after_its_periods() -> None:
    contents = compute_invoice_contents(
        "EUR", [FeeToInvoice("a", 1000)], coupons=[fixed("r", 100, "recurring", frequency_duration_remaining=1)]
    )
    (use,) = contents.coupons
    assert (use.frequency_duration_remaining, use.terminated) == (0, True)


def test_credits_come_after_taxes_credit_notes_before_wallet() -> None:
    # 1000 + 20 % = 1200; credit notes 300 (oldest) then 2000 -> 900 taken; wallet untouched
    contents = compute_invoice_contents(
        "EUR",
        [FeeToInvoice("a", 1000, (VAT20,))],
        credit_notes=[CreditNoteCredit("cn1", "BH-1-CN001", 300), CreditNoteCredit("cn2", "BH-2-CN001", 2000)],
        wallet=WalletBalance("w", "EUR", Decimal(1), Decimal(50)),
    )
    assert [u.amount_cents for u in contents.credit_notes] == [300, 900]
    assert (contents.credit_notes_cents, contents.prepaid_credits_cents, contents.total_cents) == (1200, 0, 0)


def test_wallet_never_gives_more_than_it_holds() -> None:
    # 3 credits at 0.333 EUR = 99.9 cents: the wallet gives 99 cents and empties
    contents = compute_invoice_contents(
        "EUR", [FeeToInvoice("a", 500)], wallet=WalletBalance("w", "EUR", Decimal("0.333"), Decimal(3))
    )
    assert contents.wallet is not None
    assert (contents.prepaid_credits_cents, contents.wallet.balance_after, contents.total_cents) == (99, 0, 401)
    # 10 credits at 3 EUR, due 100 cents: 100 / 300 = 0.333333333333 credits, the rest stays
    partial = compute_invoice_contents(
        "EUR", [FeeToInvoice("a", 100)], wallet=WalletBalance("w", "EUR", Decimal(3), Decimal(10))
    )
    assert partial.wallet is not None
    assert partial.wallet.credits == Decimal("0.333333333333")
    assert partial.wallet.balance_after == Decimal("9.666666666667") and partial.total_cents == 0


def test_wallet_in_another_currency_is_not_used() -> None:
    contents = compute_invoice_contents(
        "EUR", [FeeToInvoice("a", 500)], wallet=WalletBalance("w", "USD", Decimal(1), Decimal(100))
    )
    assert contents.wallet is None and contents.total_cents == 500


def test_negative_fee_is_refused() -> None:
    with pytest.raises(InvalidDraftError, match="negative"):
        compute_invoice_contents("EUR", [FeeToInvoice("a", -1)])


# -- minimum commitment -------------------------------------------------------------

MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def fee(kind: str, cents: int, start: datetime = MARCH[0], end: datetime = MARCH[1]) -> DraftFee:
    return DraftFee(
        fee_key=f"sub_1/{kind}/{start:%Y-%m-%d}", kind=kind, external_subscription_id="sub_1",
        plan_code="committed", billable_metric_code=None if kind == "subscription" else "api_calls",
        charge_model=None if kind == "subscription" else "standard", invoice_display_name=kind,
        period_start=start, period_end=end, units=Decimal(1), unit_amount=Decimal(cents) / 100,
        precise_amount=Decimal(cents) / 100, amount_cents=cents,
    )


def draft(*fees: DraftFee) -> InvoiceDraft:
    total = sum(f.amount_cents for f in fees)
    return InvoiceDraft("cus_1/EUR/2025-04-01", "cus_1", "Customer", "EUR", 2, date(2025, 4, 1),
                        fees[0].period_start, fees[0].period_end, total, total, tuple(fees))


PLANS = {"committed": PlanCommitment("committed", 10000, "monthly", amount_cents=1000)}


@pytest.mark.parametrize(
    ("fees", "true_up"),
    [
        # full month: 10000 - (1000 + 2000) = 7000
        ([fee("subscription", 1000), fee("charge", 2000)], 7000),
        # above the minimum: no true-up line
        ([fee("subscription", 1000), fee("charge", 9500)], None),
        # March 15 - April 1 (17 of 31 days): 10000 x 17/31 = 5483.8709... - (548 + 200) -> 4736
        ([fee("subscription", 548, datetime(2025, 3, 15, tzinfo=UTC)),
          fee("charge", 200, datetime(2025, 3, 15, tzinfo=UTC))], 4736),
    ],
)
def test_minimum_commitment_true_up(fees: list[DraftFee], true_up: int | None) -> None:
    (result,) = add_commitment_true_ups([draft(*fees)], PLANS)
    lines = [f for f in result.fees if f.kind == "commitment"]
    if true_up is None:
        assert lines == [] and result.sub_total_cents == sum(f.amount_cents for f in fees)
        return
    (line,) = lines
    assert line.amount_cents == true_up
    assert result.sub_total_cents == result.total_cents == sum(f.amount_cents for f in fees) + true_up
    assert line.fee_key.startswith("sub_1/commitment/") and line.plan_code == "committed"


def test_commitment_waits_for_the_period_to_end() -> None:
    advance = fee("subscription", 1000, datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 5, 1, tzinfo=UTC))
    plans = {"committed": PlanCommitment("committed", 10000, "monthly", 1000, pay_in_advance=True)}
    (result,) = add_commitment_true_ups([draft(advance, fee("charge", 2000))], plans)
    # April's advance fee has no true-up yet; March's charges count March's advance fee (1000)
    (line,) = [f for f in result.fees if f.kind == "commitment"]
    assert line.amount_cents == 10000 - 2000 - 1000 and line.period_start == MARCH[0]


@pytest.mark.parametrize(
    ("start", "end", "ratio"),
    [
        (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC), Decimal(1)),
        (datetime(2025, 3, 15, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC), Decimal(17) / Decimal(31)),
        (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 11, tzinfo=UTC), Decimal(10) / Decimal(31)),
        # Europe/Paris midnights (UTC+1 / +2 after March 30): still the whole month
        (datetime(2025, 2, 28, 23, tzinfo=UTC), datetime(2025, 3, 31, 22, tzinfo=UTC), Decimal(1)),
    ],
)
def test_prorate_ratio(start: datetime, end: datetime, ratio: Decimal) -> None:
    assert prorate_ratio(start, end, "monthly") == ratio
