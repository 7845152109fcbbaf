"""A full billing cycle on the real engines: chDB for dbt, embedded PostgreSQL for the
ledger. Amounts are computed by hand in the comments."""

from __future__ import annotations

from decimal import Decimal

from pypdf import PdfReader

from billhouse.ledger_connection import ledger
from invoicing.finalize import list_invoices

from .conftest import FIRST_BATCH, Billed, relations_read_outside_lineage


def _invoice(report, customer: str, issued: str):
    [invoice] = [
        i for i in report.invoices
        if i.external_customer_id == customer and i.issuing_date.isoformat() == issued
    ]
    return invoice


def _fee(invoice, name: str):
    [fee] = [f for f in invoice.fees if (f.billable_metric_code or "subscription") == name]
    return fee


def test_october_invoice_counts_duplicated_events_once(billed: Billed) -> None:
    october = _invoice(billed.first_close, "cus_a", "2026-11-01")
    # 5 calls + the 23:59:59.999 call = 6 calls (the duplicate in the batch and the
    # resend in a later load are ignored) x 0.003 = 0.018 EUR -> 2 cents
    calls = _fee(october, "api_calls")
    assert calls.units == Decimal(6)
    assert calls.precise_amount == Decimal("0.018")
    assert calls.amount_cents == 2
    # 2 + 0.5 GB (the resent 100 GB copy is ignored) x 0.1 = 0.25 EUR -> 25 cents
    storage = _fee(october, "storage_gb")
    assert storage.units == Decimal("2.5")
    assert storage.amount_cents == 25
    assert _fee(october, "subscription").amount_cents == 1000
    assert october.total_cents == 1000 + 2 + 25


def test_month_without_usage_but_midnight_event_bills_flat_fee_plus_that_event(billed: Billed) -> None:
    november = _invoice(billed.second_close, "cus_a", "2026-12-01")
    # the only November event is the one at 2026-11-01T00:00:00Z: 0.003 -> 0 cents
    assert _fee(november, "api_calls").units == Decimal(1)
    assert _fee(november, "storage_gb").units == Decimal(0)
    assert november.total_cents == 1000


def test_month_with_no_usage_gives_the_flat_fee_only(billed: Billed) -> None:
    november = _invoice(billed.second_close, "cus_b", "2026-12-01")
    assert [f.amount_cents for f in november.fees if f.kind == "charge"] == [0, 0]
    assert november.total_cents == 0  # the "precise" plan has no flat fee
    tokyo = _invoice(billed.second_close, "cus_j", "2026-12-01")
    assert tokyo.total_cents == 9800
    assert all(f.amount_cents == 0 for f in tokyo.fees if f.kind == "charge")


def test_amounts_that_float_arithmetic_gets_wrong_are_exact(billed: Billed) -> None:
    # The traps are real: binary floats get both of these wrong.
    assert round(1.005 * 100) == 100
    assert sum([0.1] * 10 + [0.2] * 10) != 3.0
    october = _invoice(billed.first_close, "cus_b", "2026-11-01")
    # 1 token x 1.005 EUR = 1.005 -> 101 cents (half-up), not 100
    tokens = _fee(october, "tokens")
    assert tokens.precise_amount == Decimal("1.005")
    assert tokens.amount_cents == 101
    # 10 x 0.1 + 10 x 0.2 = 3 GB exactly; x 0.003 (0.1 + 0.2 cents) = 0.009 EUR -> 1 cent
    storage = _fee(october, "storage_gb")
    assert storage.units == Decimal(3)
    assert storage.precise_amount == Decimal("0.009")
    assert storage.amount_cents == 1
    assert october.total_cents == 102


def test_zero_decimal_currency_rounds_to_whole_yen(billed: Billed) -> None:
    october = _invoice(billed.first_close, "cus_j", "2026-11-01")
    # 3 calls x 0.5 JPY = 1.5 -> 2 yen; plus 9800 yen
    assert _fee(october, "api_calls").amount_cents == 2
    assert october.currency == "JPY"
    assert october.total_cents == 9802


def test_rerunning_the_close_adds_no_invoice_and_changes_no_number(billed: Billed) -> None:
    assert len(billed.first_close.created) == 3
    assert len(billed.second_close.created) == 3  # only November's
    assert billed.rerun_close.created == []
    before = {i.invoice_key: i.number for i in billed.second_close.invoices}
    after = {i.invoice_key: i.number for i in billed.rerun_close.invoices}
    assert before == after
    with ledger(billed.settings) as conn:
        assert len(list_invoices(conn)) == 6


def test_invoice_numbers_have_no_gap_after_two_closes(billed: Billed) -> None:
    with ledger(billed.settings) as conn:
        numbers = [i.number for i in list_invoices(conn)]
    assert numbers == [f"BH-{n:06d}" for n in range(1, 7)]
    first = sorted(i.number for i in billed.first_close.invoices)
    assert first == ["BH-000001", "BH-000002", "BH-000003"]


def test_every_closed_period_is_on_exactly_one_invoice(billed: Billed) -> None:
    with ledger(billed.settings) as conn:
        invoices = list_invoices(conn)
    periods = [(f.external_subscription_id, f.period_start, f.kind) for i in invoices for f in i.fees
               if f.kind == "subscription"]
    assert len(periods) == len(set(periods)) == 6  # 3 subscriptions x October, November


def test_pdfs_show_the_number_and_the_total_of_the_ledger(billed: Billed) -> None:
    october = _invoice(billed.first_close, "cus_a", "2026-11-01")
    pdf = billed.rerun_close.pdfs[october.number]
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert october.number in text
    assert "€10.27" in text
    assert "Alpha SA" in text
    tokyo = _invoice(billed.first_close, "cus_j", "2026-11-01")
    text = "\n".join(page.extract_text() for page in PdfReader(billed.rerun_close.pdfs[tokyo.number]).pages)
    assert "¥9,802" in text


def test_warehouse_keeps_every_copy_but_models_count_each_event_once(billed: Billed) -> None:
    [raw] = billed.query("select count() as n from billhouse_raw.events")
    [dedup] = billed.query("select count() as n from billhouse.int_events_deduplicated")
    assert raw["n"] == len(FIRST_BATCH) + 2
    assert raw["n"] - dedup["n"] == 3
    [kept] = billed.query(
        "select properties from billhouse.int_events_deduplicated where transaction_id = 'a-store-1'"
    )
    assert '"2"' in kept["properties"]


def test_every_relation_a_model_reads_is_upstream_of_it(billed: Billed) -> None:
    # the chDB profile runs two dbt threads: a model must not read (at compile time or in
    # its SQL) a model that dbt may be rebuilding at the same moment
    assert relations_read_outside_lineage(billed.settings) == set()


def test_the_drafts_never_null_check_names_each_null_column(billed: Billed) -> None:
    # the close ran the drafts' one not-null test per model (tests/dbt/generic/not_null_columns.sql);
    # its compiled query, read from a copy of the fees with two columns nulled, lists both
    [compiled] = (billed.settings.dbt_target_dir / "compiled").rglob("fct_invoice_draft_fees_not_null.sql")
    check = compiled.read_text()
    fees = "`billhouse`.`fct_invoice_draft_fees`"
    assert fees in check
    assert billed.query(check) == []
    nulled = (
        "(select * replace (cast(null as Nullable(String)) as plan_code,"
        " if(fee_kind = 'subscription', null, amount_cents) as amount_cents)"
        f" from {fees})"
    )
    failures = billed.query(check.replace(fees, nulled))
    kinds = billed.query(f"select fee_kind, count() as fees from {fees} group by fee_kind")
    counts = {row["fee_kind"]: row["fees"] for row in kinds}
    assert sorted(row["null_columns"] for row in failures) == sorted(
        ["plan_code amount_cents " if kind == "subscription" else "plan_code " for kind, n in counts.items() for _ in range(n)]
    )
