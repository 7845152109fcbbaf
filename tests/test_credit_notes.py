"""Credit notes on finalized invoices: limits, numbering, idempotency, credits consumed.

Real embedded PostgreSQL, one server for this module. Invoices are hand-computed:
the EUR invoice below is 10000 + 20 % VAT = 12000, so credit notes may total €120.00.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest

from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from invoicing.credit_notes import create_credit_note, creditable_amounts, list_credit_notes
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import (
    CommercialTermsError,
    CreditNoteExceedsRemainingError,
    IdempotencyConflictError,
    InvoiceStateError,
)
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedInvoice, get_invoice
from invoicing.lifecycle import void_invoice
from invoicing.migrations import migrate
from invoicing.taxes import attach_tax, create_tax
from invoicing.wallets import create_wallet, top_up_wallet


def invoice_for(conn: psycopg.Connection, customer: str, cents: int, month: int, currency: str = "EUR") -> FinalizedInvoice:
    start, end = datetime(2025, month, 1, tzinfo=UTC), datetime(2025, month + 1, 1, tzinfo=UTC)
    fee = DraftFee(
        fee_key=f"{customer}/{month}", kind="subscription", external_subscription_id=f"sub-{customer}",
        plan_code="pro", billable_metric_code=None, charge_model=None, invoice_display_name="Pro plan",
        period_start=start, period_end=end, units=Decimal(1), unit_amount=Decimal(cents) / 100,
        precise_amount=Decimal(cents) / 100, amount_cents=cents,
    )
    draft = InvoiceDraft(
        invoice_key=f"{customer}/{currency}/{month}", external_customer_id=customer, customer_name=customer,
        currency=currency, currency_exponent=0 if currency == "JPY" else 2, issuing_date=date(2025, month + 1, 1),
        period_start=start, period_end=end, sub_total_cents=cents, total_cents=cents, fees=(fee,),
    )
    (invoice,) = finalize_drafts(conn, [draft], "cn", "CN")
    return invoice


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[psycopg.Connection]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("credit_notes"))
    try:
        with ledger(settings) as conn:
            migrate(conn)
            create_tax(conn, "vat_20", "VAT 20%", "20")
            attach_tax(conn, "vat_20", "billing_entity", "cn")
            yield conn
    finally:
        stop_ledger(settings)


def test_a_credit_note_then_a_second_that_would_exceed_the_remainder_is_refused(conn: psycopg.Connection) -> None:
    invoice = invoice_for(conn, "cus_a", 10000, 3)
    assert (invoice.taxes_cents, invoice.total_cents) == (2000, 12000)
    first = create_credit_note(conn, invoice.id, idempotency_key="cn-a-1", credit_amount_cents=5000,
                               reason="order_change", description="Downgrade")
    # €50 of €120, tax part 5000 x 2000/12000 = 833.33 -> 833
    assert (first.number, first.total_amount_cents, first.taxes_amount_cents) == ("CN-000001-CN001", 5000, 833)
    assert (first.credit_amount_cents, first.balance_amount_cents, first.refund_status) == (5000, 5000, None)
    assert creditable_amounts(conn, invoice.id).creditable_cents == 7000
    with pytest.raises(CreditNoteExceedsRemainingError) as refused:
        create_credit_note(conn, invoice.id, idempotency_key="cn-a-2", credit_amount_cents=8000)
    assert str(refused.value) == (
        "credit note refused: credit note total of €80.00 on invoice CN-000001 exceeds what remains to credit, €70.00"
    )
    assert (refused.value.invoice_number, refused.value.remaining) == ("CN-000001", "€70.00")
    assert [n.number for n in list_credit_notes(conn, invoice_id=invoice.id)] == ["CN-000001-CN001"]
    # exactly the remainder is accepted, and numbered next without a gap
    second = create_credit_note(conn, invoice.id, idempotency_key="cn-a-3", credit_amount_cents=7000)
    assert second.number == "CN-000001-CN002"
    assert creditable_amounts(conn, invoice.id).creditable_cents == 0
    with pytest.raises(CreditNoteExceedsRemainingError, match="€0.00"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-a-4", credit_amount_cents=1)
    # the finalized invoice itself never changed
    assert get_invoice(conn, id=invoice.id).total_cents == 12000


def test_refunds_never_exceed_what_was_paid(conn: psycopg.Connection) -> None:
    invoice = invoice_for(conn, "cus_b", 10000, 3)
    with pytest.raises(CreditNoteExceedsRemainingError, match="refund of €10.00 .* remains to refund, €0.00"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-b-1", refund_amount_cents=1000)
    conn.execute("UPDATE invoices SET payment_status = 'succeeded' WHERE id = %s", (invoice.id,))
    note = create_credit_note(conn, invoice.id, idempotency_key="cn-b-2", refund_amount_cents=2000,
                              credit_amount_cents=1000, reason="product_unsatisfactory")
    assert (note.total_amount_cents, note.refund_status, note.balance_amount_cents) == (3000, "pending", 1000)
    amounts = creditable_amounts(conn, invoice.id)
    assert (amounts.creditable_cents, amounts.refundable_cents) == (9000, 9000)


def test_credit_notes_are_idempotent(conn: psycopg.Connection) -> None:
    invoice = invoice_for(conn, "cus_c", 1000, 3)
    first = create_credit_note(conn, invoice.id, idempotency_key="cn-c-1", credit_amount_cents=100)
    assert create_credit_note(conn, invoice.id, idempotency_key="cn-c-1", credit_amount_cents=100) == first
    with pytest.raises(IdempotencyConflictError, match="CN001"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-c-1", credit_amount_cents=200)
    with pytest.raises(CommercialTermsError, match="reason"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-c-2", credit_amount_cents=1, reason="because")
    with pytest.raises(CommercialTermsError, match="more than 0"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-c-3")
    assert len(list_credit_notes(conn, external_customer_id="cus_c")) == 1


def test_credit_note_credit_is_consumed_by_the_next_invoices_before_the_wallet(conn: psycopg.Connection) -> None:
    march = invoice_for(conn, "cus_d", 5000, 3)  # 5000 + 1000 VAT = 6000
    note = create_credit_note(conn, march.id, idempotency_key="cn-d-1", credit_amount_cents=4000)
    create_wallet(conn, "cus_d", "EUR")
    top_up_wallet(conn, "cus_d", idempotency_key="cn-d-topup", granted_credits="100")
    # April: 2500 + 500 VAT = 3000, all paid by the credit note (1000 left), wallet untouched
    april = invoice_for(conn, "cus_d", 2500, 4)
    assert (april.credit_notes_cents, april.prepaid_credits_cents, april.total_cents) == (3000, 0, 0)
    assert [(c.credit_note_number, c.amount_cents) for c in april.credit_note_credits] == [(note.number, 3000)]
    # May: 3000 + 600 = 3600: 1000 from the credit note, 2600 from the wallet
    may = invoice_for(conn, "cus_d", 3000, 5)
    assert (may.credit_notes_cents, may.prepaid_credits_cents, may.total_cents) == (1000, 2600, 0)
    assert list_credit_notes(conn, invoice_id=march.id)[0].balance_amount_cents == 0


def test_voided_invoice_cannot_be_credited_and_credited_invoice_cannot_be_voided(conn: psycopg.Connection) -> None:
    voided = invoice_for(conn, "cus_e", 1000, 3)
    void_invoice(conn, voided.id)
    with pytest.raises(InvoiceStateError, match="voided"):
        create_credit_note(conn, voided.id, idempotency_key="cn-e-1", credit_amount_cents=100)
    credited = invoice_for(conn, "cus_e", 1000, 4)
    create_credit_note(conn, credited.id, idempotency_key="cn-e-2", credit_amount_cents=100)
    with pytest.raises(InvoiceStateError, match="credit notes"):
        void_invoice(conn, credited.id)


def test_jpy_credit_note_limits_are_in_whole_yen(conn: psycopg.Connection) -> None:
    invoice = invoice_for(conn, "cus_jp", 10417, 3, currency="JPY")  # + 20 % = 2083.4 -> 2083; 12500
    assert invoice.total_cents == 12500
    with pytest.raises(CreditNoteExceedsRemainingError, match="¥12,501 .* ¥12,500"):
        create_credit_note(conn, invoice.id, idempotency_key="cn-jp-1", credit_amount_cents=12501)
