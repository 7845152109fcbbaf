"""Invoice contents in the ledger: coupons, taxes, wallets, add-ons, commitments, voiding.

Hand-computed invoices finalized into a real PostgreSQL (embedded, one server for this
module). Each test bills its own customers under its own billing entity, so numbers
and entity-level taxes do not interfere. The arithmetic of each expected figure is in
the comments.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from billhouse.ledger_connection import ledger, ledger_url, stop_ledger
from billhouse.settings import Settings
from invoicing.add_ons import AddOn, AddOnLine, create_add_on, create_one_off_invoice
from invoicing.coupons import Coupon, apply_coupon, create_coupon, list_applied_coupons
from invoicing.customers import set_net_payment_term
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import CommercialTermsError, IdempotencyConflictError, InvoiceStateError
from invoicing.finalize import finalize_drafts
from invoicing.ledger import AppliedTaxLine, get_invoice, list_invoices
from invoicing.lifecycle import void_invoice
from invoicing.migrations import migrate
from invoicing.taxes import attach_tax, create_tax
from invoicing.wallets import create_wallet, get_wallet, top_up_wallet, wallet_transactions

MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def sub_fee(customer: str, cents: int, plan: str = "pro", month: int = 3) -> DraftFee:
    start = datetime(2025, month, 1, tzinfo=UTC)
    end = datetime(2025 + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return DraftFee(
        fee_key=f"{customer}/sub/{plan}/{month}", kind="subscription", external_subscription_id=f"sub-{customer}",
        plan_code=plan, billable_metric_code=None, charge_model=None, invoice_display_name=f"{plan} plan",
        period_start=start, period_end=end, units=Decimal(1), unit_amount=Decimal(cents) / 100,
        precise_amount=Decimal(cents) / 100, amount_cents=cents,
    )


def charge_fee(customer: str, cents: int, plan: str = "pro", index: int = 0, month: int = 3) -> DraftFee:
    start = datetime(2025, month, 1, tzinfo=UTC)
    end = datetime(2025 + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return DraftFee(
        fee_key=f"{customer}/charge/{plan}/{index}/{month}", kind="charge", external_subscription_id=f"sub-{customer}",
        plan_code=plan, billable_metric_code="api_calls", charge_model="standard", invoice_display_name="API calls",
        period_start=start, period_end=end, units=Decimal(cents), unit_amount=Decimal("0.01"),
        precise_amount=Decimal(cents) / 100, amount_cents=cents, charge_id=f"{plan}/{index}",
    )


def draft(customer: str, *fees: DraftFee, currency: str = "EUR", month: int = 3) -> InvoiceDraft:
    total = sum(f.amount_cents for f in fees)
    issuing = date(2025 + (month == 12), month % 12 + 1, 1)
    return InvoiceDraft(
        invoice_key=f"{customer}/{currency}/{issuing}", external_customer_id=customer,
        customer_name=f"Customer {customer}", currency=currency, currency_exponent=0 if currency == "JPY" else 2,
        issuing_date=issuing, period_start=fees[0].period_start, period_end=fees[0].period_end,
        sub_total_cents=total, total_cents=total, fees=fees,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("contents"))
    yield settings
    stop_ledger(settings)


@pytest.fixture(scope="module")
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    with ledger(settings) as conn:
        migrate(conn)
        yield conn


def test_coupon_tax_and_wallet_on_one_invoice(conn: psycopg.Connection) -> None:
    create_tax(conn, "vat_20", "VAT 20%", "20")
    create_tax(conn, "vat_10", "VAT 10%", "10")
    attach_tax(conn, "vat_20", "billing_entity", "one")
    attach_tax(conn, "vat_10", "charge", "pro/0")  # the charge's own rate beats the entity's
    create_coupon(conn, Coupon("welcome", "Welcome €20", "fixed_amount", "recurring", amount_cents=2000,
                               amount_currency="EUR", frequency_duration=3))
    apply_coupon(conn, "cus_one", "welcome")
    create_wallet(conn, "cus_one", "EUR", rate_amount="0.5")
    top_up_wallet(conn, "cus_one", idempotency_key="topup-1", paid_credits="60", granted_credits="40")
    top_up_wallet(conn, "cus_one", idempotency_key="topup-1", paid_credits="60", granted_credits="40")  # retry

    # 10000 (20 %) + 2550 (10 %) = 12550; coupon 2000 pro rata; taxes 1681.27... + 214.36... = 1895.64 -> 1896
    # 12550 - 2000 + 1896 = 12446; wallet 100 credits x €0.50 = 5000 -> due 7446
    (invoice,) = finalize_drafts(conn, [draft("cus_one", sub_fee("cus_one", 10000), charge_fee("cus_one", 2550))],
                                 "one", "ONE")
    assert invoice.number == "ONE-000001" and invoice.created
    assert (invoice.sub_total_cents, invoice.coupons_cents, invoice.taxes_cents) == (12550, 2000, 1896)
    assert (invoice.credit_notes_cents, invoice.prepaid_credits_cents, invoice.credits_cents) == (0, 5000, 5000)
    assert invoice.total_cents == 7446 and invoice.prepaid_credits == Decimal(100)
    assert invoice.applied_taxes == (
        AppliedTaxLine("vat_20", "VAT 20%", Decimal(20), 8406, 1681),
        AppliedTaxLine("vat_10", "VAT 10%", Decimal(10), 2144, 215),
    )
    assert [(c.coupon_code, c.amount_cents) for c in invoice.applied_coupons] == [("welcome", 2000)]
    sub, api = invoice.fees
    assert sub.precise_coupons_amount_cents + api.precise_coupons_amount_cents == 2000
    assert api.charge_id == "pro/0" and str(api.precise_taxes_amount_cents).startswith("214.3625498")

    wallet = get_wallet(conn, "cus_one")
    assert wallet is not None and wallet.credits_balance == 0 and wallet.consumed_credits == 100
    history = [(t.source, t.credits, t.amount_cents, t.balance_after) for t in wallet_transactions(conn, "cus_one")]
    assert history == [("top_up", 100, 5000, 100), ("invoice", 100, 5000, 0)]
    (applied,) = list_applied_coupons(conn, "cus_one")
    assert (applied.frequency_duration_remaining, applied.status) == (2, "active")

    # a re-run of the close changes nothing: same invoice, coupon and wallet untouched
    (again,) = finalize_drafts(conn, [draft("cus_one", sub_fee("cus_one", 10000), charge_fee("cus_one", 2550))],
                               "one", "ONE")
    assert again == replace(invoice, created=False)
    assert list_applied_coupons(conn, "cus_one")[0].frequency_duration_remaining == 2
    assert len(wallet_transactions(conn, "cus_one")) == 2


def test_a_100_percent_coupon_gives_a_numbered_zero_invoice(conn: psycopg.Connection) -> None:
    create_tax(conn, "vat_20", "VAT 20%", "20")
    attach_tax(conn, "vat_20", "billing_entity", "full")
    create_coupon(conn, Coupon("free_month", "Free month", "percentage", "once", percentage_rate=Decimal(100)))
    apply_coupon(conn, "cus_full", "free_month")
    # 4900 + 123 = 5023, all discounted; 20 % of 0 = 0
    first, second = finalize_drafts(conn, [
        draft("cus_full", sub_fee("cus_full", 4900), charge_fee("cus_full", 123)),
        draft("cus_full", sub_fee("cus_full", 4900, month=4), month=4),
    ], "full", "FULL")
    assert (first.number, first.coupons_cents, first.taxes_cents, first.total_cents) == ("FULL-000001", 5023, 0, 0)
    assert first.status == "finalized" and first.payment_status == "pending"
    # once: the coupon is used up; April pays 4900 + 980 tax
    assert (second.number, second.coupons_cents, second.taxes_cents, second.total_cents) == ("FULL-000002", 0, 980, 5880)
    assert list_applied_coupons(conn, "cus_full")[0].status == "terminated"


def test_taxes_on_a_jpy_invoice(conn: psycopg.Connection) -> None:
    create_tax(conn, "jct_10", "Consumption tax 10%", "10")
    attach_tax(conn, "jct_10", "customer", "cus_jp")
    # 9800 + 617 = 10417 yen; 10 % = 1041.7 -> 1042; total 11459 yen
    (invoice,) = finalize_drafts(conn, [draft("cus_jp", sub_fee("cus_jp", 9800, "tokyo"),
                                              charge_fee("cus_jp", 617, "tokyo"), currency="JPY")], "jp", "JP")
    assert (invoice.currency, invoice.currency_exponent) == ("JPY", 0)
    assert (invoice.sub_total_cents, invoice.taxes_cents, invoice.total_cents) == (10417, 1042, 11459)
    assert [(t.taxable_base_cents, t.amount_cents) for t in invoice.applied_taxes] == [(10417, 1042)]


def test_once_coupon_carries_its_remainder_to_the_next_invoices(conn: psycopg.Connection) -> None:
    create_coupon(conn, Coupon("migration_credit", "Migration credit €50", "fixed_amount", "once",
                               amount_cents=5000, amount_currency="EUR"))
    apply_coupon(conn, "cus_carry", "migration_credit")
    march, april, may = finalize_drafts(conn, [
        draft("cus_carry", sub_fee("cus_carry", 3000, month=m), month=m) for m in (3, 4, 5)
    ], "carry", "CARRY")
    # 5000 coupon: March takes 3000 (due 0), April the remaining 2000 (due 1000), May nothing
    assert [(i.coupons_cents, i.total_cents) for i in (march, april, may)] == [(3000, 0), (2000, 1000), (0, 3000)]
    (applied,) = list_applied_coupons(conn, "cus_carry")
    assert (applied.amount_cents_remaining, applied.status) == (0, "terminated")


def test_the_most_specific_tax_wins(conn: psycopg.Connection) -> None:
    for code, rate in (("std_20", "20"), ("cust_19", "19"), ("plan_10", "10"), ("exempt_0", "0")):
        create_tax(conn, code, code, rate)
    attach_tax(conn, "std_20", "billing_entity", "spec")
    attach_tax(conn, "cust_19", "customer", "cus_x")
    attach_tax(conn, "plan_10", "plan", "reduced")
    attach_tax(conn, "exempt_0", "charge", "basic/1")
    x, y = finalize_drafts(conn, [
        # cus_x, plan basic: sub fee -> customer 19 %; charge basic/0 -> customer 19 %; charge basic/1 -> 0 %
        draft("cus_x", sub_fee("cus_x", 1000, "basic"), charge_fee("cus_x", 1000, "basic", 0),
              charge_fee("cus_x", 1000, "basic", 1)),
        # cus_y: plan reduced -> 10 % (beats the entity's 20 %); plan basic charge -> entity 20 %
        draft("cus_y", sub_fee("cus_y", 1000, "reduced"), charge_fee("cus_y", 1000, "basic", 0)),
    ], "spec", "SPEC")
    assert [f.precise_taxes_amount_cents for f in x.fees] == [190, 190, 0]
    assert [f.precise_taxes_amount_cents for f in y.fees] == [100, 200]
    assert (x.taxes_cents, y.taxes_cents) == (380, 300)
    assert {t.tax_code: t.amount_cents for t in x.applied_taxes} == {"cust_19": 380, "exempt_0": 0}
    assert [t.tax_code for t in y.applied_taxes] == ["std_20", "plan_10"]  # highest rate first


def test_add_ons_are_invoiced_on_their_own(conn: psycopg.Connection) -> None:
    create_tax(conn, "vat_20", "VAT 20%", "20")
    create_tax(conn, "svc_5_5", "VAT 5.5%", "5.5")
    attach_tax(conn, "vat_20", "billing_entity", "addon")
    attach_tax(conn, "svc_5_5", "add_on", "setup")
    create_add_on(conn, AddOn("setup", "Setup fee", 15000, "EUR"))
    create_add_on(conn, AddOn("training", "Training day", 80000, "EUR", invoice_display_name="On-site training"))
    create_coupon(conn, Coupon("ten_off", "10% off", "percentage", "forever", percentage_rate=Decimal(10)))
    apply_coupon(conn, "cus_addon", "ten_off")  # coupons discount subscription invoices only
    lines = [AddOnLine("setup"), AddOnLine("training", units=Decimal("1.5"), unit_amount_cents=70000)]
    invoice = create_one_off_invoice(conn, idempotency_key="order-77", external_customer_id="cus_addon",
                                     customer_name="Addon Ltd", currency="EUR", lines=lines,
                                     issuing_date=date(2025, 3, 10), billing_entity="addon", prefix="ADD")
    # setup 15000 at 5.5 % = 825; training 1.5 x 70000 = 105000 at 20 % = 21000
    assert invoice.invoice_type == "one_off" and [f.kind for f in invoice.fees] == ["add_on", "add_on"]
    assert [(f.add_on_code, f.amount_cents, f.invoice_display_name) for f in invoice.fees] == [
        ("setup", 15000, "Setup fee"), ("training", 105000, "On-site training")]
    assert (invoice.sub_total_cents, invoice.coupons_cents, invoice.taxes_cents, invoice.total_cents) == (
        120000, 0, 21825, 141825)
    assert invoice.fees[0].external_subscription_id is None
    retry = create_one_off_invoice(conn, idempotency_key="order-77", external_customer_id="cus_addon",
                                   customer_name="Addon Ltd", currency="EUR", lines=lines,
                                   issuing_date=date(2025, 3, 10), billing_entity="addon", prefix="ADD")
    assert retry.number == invoice.number == "ADD-000001" and not retry.created
    with pytest.raises(CommercialTermsError, match="USD"):
        create_one_off_invoice(conn, idempotency_key="order-78", external_customer_id="cus_addon",
                               customer_name="Addon Ltd", currency="USD", lines=[AddOnLine("setup")],
                               issuing_date=date(2025, 3, 10), billing_entity="addon", prefix="ADD")


def test_due_date_follows_the_net_payment_term(conn: psycopg.Connection) -> None:
    set_net_payment_term(conn, "cus_net30", 30)
    (invoice,) = finalize_drafts(conn, [draft("cus_net30", sub_fee("cus_net30", 100))], "net", "NET")
    assert invoice.issuing_date == date(2025, 4, 1) and invoice.due_date == date(2025, 5, 1)


def test_voiding_gives_prepaid_credits_back(conn: psycopg.Connection) -> None:
    create_wallet(conn, "cus_void", "EUR")
    top_up_wallet(conn, "cus_void", idempotency_key="void-topup", granted_credits="10")
    (invoice,) = finalize_drafts(conn, [draft("cus_void", sub_fee("cus_void", 2500))], "void", "VOID")
    assert (invoice.prepaid_credits_cents, invoice.total_cents) == (1000, 1500)
    voided = void_invoice(conn, invoice.id)
    assert voided.status == "voided" and voided.number == invoice.number
    assert void_invoice(conn, invoice.id) == voided  # idempotent
    wallet = get_wallet(conn, "cus_void")
    assert wallet is not None and wallet.credits_balance == 10
    assert [t.source for t in wallet_transactions(conn, "cus_void")] == ["top_up", "invoice", "invoice_voided"]
    (paid,) = finalize_drafts(conn, [draft("cus_void", sub_fee("cus_void", 100, month=4), month=4)], "void", "VOID")
    conn.execute("UPDATE invoices SET payment_status = 'succeeded' WHERE id = %s", (paid.id,))
    with pytest.raises(InvoiceStateError, match="paid"):
        void_invoice(conn, paid.id)


def test_issued_contents_cannot_change(conn: psycopg.Connection) -> None:
    create_tax(conn, "vat_20", "VAT 20%", "20")
    attach_tax(conn, "vat_20", "customer", "cus_frozen")
    (invoice,) = finalize_drafts(conn, [draft("cus_frozen", sub_fee("cus_frozen", 1000))], "frozen", "FRZ")
    for statement in (
        "UPDATE invoices SET taxes_cents = 0 WHERE id = %s",
        "UPDATE invoices SET due_date = due_date + 1 WHERE id = %s",
        "UPDATE invoice_applied_taxes SET amount_cents = 0 WHERE invoice_id = %s",
        "DELETE FROM fee_applied_taxes WHERE invoice_id = %s",
    ):
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute(statement.encode(), (invoice.id,))


def test_terms_are_idempotent_and_conflicts_are_refused(conn: psycopg.Connection) -> None:
    create_tax(conn, "vat_idem", "VAT", "20")
    with pytest.raises(IdempotencyConflictError, match="new code"):
        create_tax(conn, "vat_idem", "VAT", "21")
    with pytest.raises(CommercialTermsError, match="rate"):
        create_tax(conn, "bad", "Bad", "120")
    with pytest.raises(CommercialTermsError, match="float"):
        create_tax(conn, "bad", "Bad", 0.2)  # type: ignore[arg-type]
    create_coupon(conn, Coupon("once_only", "Once", "fixed_amount", "once", amount_cents=100, amount_currency="EUR"))
    first = apply_coupon(conn, "cus_idem", "once_only")
    assert apply_coupon(conn, "cus_idem", "once_only") == first
    with pytest.raises(IdempotencyConflictError, match="not reusable"):
        apply_coupon(conn, "cus_idem", "once_only", idempotency_key="another")
    with pytest.raises(CommercialTermsError, match="percentage_rate"):
        create_coupon(conn, Coupon("bad", "Bad", "percentage", "forever"))
    with pytest.raises(CommercialTermsError, match="no active wallet"):
        top_up_wallet(conn, "cus_nowallet", idempotency_key="k", granted_credits="1")
    create_wallet(conn, "cus_idem", "EUR")
    top_up_wallet(conn, "cus_idem", idempotency_key="idem-1", paid_credits="5")
    with pytest.raises(IdempotencyConflictError):
        top_up_wallet(conn, "cus_idem", idempotency_key="idem-1", paid_credits="6")


# -- concurrency: 8 workers, 200 invoices, shared coupons and wallets -----------------

WORKERS, PER_WORKER, CUSTOMERS = 8, 25, 10


def _race_worker(url: str, worker: int, start: threading.Barrier, out: multiprocessing.Queue) -> None:
    drafts = []
    for i in range(PER_WORKER):
        n = worker * PER_WORKER + i
        customer = f"race_{n % CUSTOMERS}"
        fee = sub_fee(customer, 1000 + n, "race")
        fee = DraftFee(**{**fee.__dict__, "fee_key": f"race/{n}"})
        drafts.append(InvoiceDraft(**{**draft(customer, fee).__dict__, "invoice_key": f"race/{n}"}))
    with psycopg.connect(url, autocommit=True) as c:
        start.wait(timeout=60)
        out.put([(i.number, i.external_customer_id, i.prepaid_credits_cents, i.coupons_cents)
                 for i in finalize_drafts(c, drafts, "race", "RACE")])


def test_eight_workers_finalize_200_invoices_gapless_and_never_overdraw(
    settings: Settings, conn: psycopg.Connection
) -> None:
    create_tax(conn, "vat_20", "VAT 20%", "20")
    attach_tax(conn, "vat_20", "billing_entity", "race")
    create_coupon(conn, Coupon("race_once", "€15 once", "fixed_amount", "once", amount_cents=1500, amount_currency="EUR"))
    for c in range(CUSTOMERS):
        apply_coupon(conn, f"race_{c}", "race_once")
        create_wallet(conn, f"race_{c}", "EUR")
        top_up_wallet(conn, f"race_{c}", idempotency_key=f"race-topup-{c}", paid_credits="30")  # €30 each
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(WORKERS), ctx.Queue()
    workers = [ctx.Process(target=_race_worker, args=(ledger_url(settings), w, start, out)) for w in range(WORKERS)]
    for p in workers:
        p.start()
    results = [row for _ in workers for row in out.get(timeout=120)]
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(number for number, *_ in results) == [f"RACE-{n:06d}" for n in range(1, 201)]
    assert [i.sequential_id for i in list_invoices(conn, "race")] == list(range(1, 201))
    for c in range(CUSTOMERS):
        customer = f"race_{c}"
        mine = [r for r in results if r[1] == customer]
        # the €15 coupon and the €30 wallet are each used exactly once over the customer's invoices
        assert sum(r[3] for r in mine) == 1500
        assert sum(r[2] for r in mine) == 3000
        wallet = get_wallet(conn, customer)
        assert wallet is not None and wallet.credits_balance == 0
        balances = [t.balance_after for t in wallet_transactions(conn, customer)]
        assert balances[0] == 30 and balances[-1] == 0 and all(b >= 0 for b in balances)
    invoices = list_invoices(conn, "race")
    assert all(
        i.total_cents == i.sub_total_cents - i.coupons_cents + i.taxes_cents - i.credits_cents >= 0 for i in invoices
    )
