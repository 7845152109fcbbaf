"""The billing close: rate every period that ended by ``as_of`` and invoice it.

Steps, each owning its engine only while it runs (chDB admits one process per store):
1. dbt builds staging → metering → rating → invoice drafts on the warehouse;
2. the drafts are read back;
3. each draft is finalized into the ledger in its own transaction (idempotent by
   invoice key, gapless numbers) — just before, subscriptions that ended inside a
   period already billed get a credit note for the unused days
   (``invoicing.termination_credits``), which this close's invoices consume;
4. each invoice without a PDF gets one;
5. (issue 6) payments are collected through Stripe if ``STRIPE_API_KEY`` is set, then
   the webhook outbox is delivered if endpoints are registered (``collect_and_deliver``).

Running the same close again changes nothing: no new invoice, no new number.

Billing clock: a close bills what closes in the window (``since``, ``as_of``] — by
default everything up to ``as_of`` — for the customers of one timezone or all. After
finalizing, the fees of the finalized invoices are mirrored into the warehouse
(``billhouse_raw.billed_fees``) so that later closes bill late events as adjustments
exactly once (see docs/billing-clock.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from billhouse.catalog import Catalog
from billhouse.commercial_terms import CommercialTerms, apply_commercial_terms
from billhouse.dbt_runner import DbtResult, run_dbt
from billhouse.events import load_events
from billhouse.identity_sync import sync_identity_index
from billhouse.ledger_connection import ledger
from billhouse.settings import Settings
from billhouse.raw_tables import BILLED_FEES, RAW_SCHEMA
from billhouse.warehouse import Warehouse, open_warehouse
from ingestion.config import landing_dir
from ingestion.loader import LoadReport, load_landed_events
from invoicing.credit_notes import CreditNote
from invoicing.drafts import EventsRead, InvoiceDraft, adjusted_fee_key, read_invoice_drafts
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedFee, FinalizedInvoice, record_pdf_path
from invoicing.migrations import migrate
from invoicing.pdf import Seller, render_invoice_pdf
from invoicing.dunning import PaymentPolicy
from invoicing.payments import CollectionReport, collect
from invoicing.stripe_gateway import StripeGateway
from invoicing.termination_credits import credit_unused_subscription_days, read_subscription_ends
from invoicing.webhooks import DeliveryReport, deliver_webhooks, list_webhook_endpoints


@dataclass
class CloseReport:
    as_of: datetime
    dbt_summary: str
    invoices: list[FinalizedInvoice] = field(default_factory=list)
    pdfs: dict[str, Path] = field(default_factory=dict)  # invoice number -> PDF
    # issue 6, after finalization: None = not run (no STRIPE_API_KEY / no webhook endpoint)
    payments: CollectionReport | None = None
    webhooks: DeliveryReport | None = None
    # credit notes for the unused days of fees billed before a termination was known
    credit_notes: list[CreditNote] = field(default_factory=list)
    # drafts not issued: a fee out of range (InvoiceDraft.held_reason)
    held: list[InvoiceDraft] = field(default_factory=list)

    @property
    def created(self) -> list[FinalizedInvoice]:
        return [invoice for invoice in self.invoices if invoice.created]

    @property
    def adjustments(self) -> list[tuple[str, FinalizedFee]]:
        """Late-event adjustments on the invoices this close created: (number, fee)."""
        return [
            (invoice.number, fee)
            for invoice in self.created
            for fee in invoice.fees
            if fee.kind == "adjustment"
        ]


def load_inputs(settings: Settings, catalog: Catalog, events: list[dict]) -> int:
    """Replace the catalog, customers and subscriptions; append the events."""
    with open_warehouse(settings) as warehouse:
        warehouse.replace_catalog(catalog)
        return load_events(warehouse, events, catalog)


# Every billing model and the invoice drafts' data tests (selectors.yml: `close`); the
# other data tests, unit tests and full-scan checks run in CI with the `billing` selector.
CLOSE_DBT_ARGS = ("build", "--selector", "close")
# Every billing model and every test (`billhouse close --all-checks`).
ALL_CHECKS_DBT_ARGS = ("build", "--selector", "billing")


def close_variables(as_of: datetime, since: datetime | None = None, timezone_name: str | None = None) -> dict[str, str]:
    """The dbt vars of a close over (since, as_of], optionally for one timezone's customers."""
    variables = {"as_of": _iso(as_of)}
    if since is not None:
        variables["close_from"] = _iso(since)
    if timezone_name:
        variables["close_timezone"] = timezone_name
    return variables


def close(
    settings: Settings,
    as_of: datetime,
    seller: Seller | None = None,
    terms: CommercialTerms | None = None,
    refresh_finance_marts: bool = True,
    *,
    since: datetime | None = None,
    timezone_name: str | None = None,
    dbt_args: tuple[str, ...] = CLOSE_DBT_ARGS,
) -> CloseReport:
    """Bill every period ended by ``as_of``; ``refresh_finance_marts=False`` skips the
    finance marts (a preview such as ``simulate`` has no finance reader)."""
    as_of_utc = as_of.astimezone(timezone.utc)
    dbt = build_drafts(settings, close_variables(as_of_utc, since, timezone_name), dbt_args)
    return finish_close(settings, as_of_utc, dbt.summary, seller, terms, refresh_finance_marts)


def build_drafts(
    settings: Settings, variables: dict[str, str], dbt_args: tuple[str, ...] = CLOSE_DBT_ARGS
) -> DbtResult:
    """The close's warehouse part: create the raw tables dbt reads as sources, load the
    landed events, and build the invoice drafts with dbt (``variables``: close_variables).
    The store stays open while dbt runs: chDB starts its engine again on the first
    connection after the last one closed (0.2 s with the bench's store), dbt's would."""
    with open_warehouse(settings) as warehouse:
        take_in_events(warehouse, settings)
        return run_dbt(settings, list(dbt_args), variables)


def take_in_events(warehouse: Warehouse | Any, settings: Settings) -> LoadReport:
    """A close's first step: the events the API accepted since the last close, loaded
    exactly once (issue 5), and, on the embedded store, the identities they duplicate
    (the identity index, billhouse/identity_sync.py; the duplicate index's model reads
    them instead of a pass over the store)."""
    landed = load_landed_events(warehouse, landing_dir(settings))
    if isinstance(warehouse, Warehouse):
        sync_identity_index(warehouse, settings.identity_index_dir)
    return landed


def finish_close(
    settings: Settings,
    as_of: datetime,
    dbt_summary: str,
    seller: Seller | None = None,
    terms: CommercialTerms | None = None,
    refresh_finance_marts: bool = True,
) -> CloseReport:
    """After dbt built the drafts: read them, finalize, mirror the billed fees, render PDFs."""
    as_of_utc = as_of.astimezone(timezone.utc)
    with open_warehouse(settings) as warehouse:
        drafts = read_invoice_drafts(warehouse)
        subscription_ends = read_subscription_ends(warehouse)
    report = CloseReport(as_of=as_of_utc, dbt_summary=dbt_summary)
    # reported by the caller (the CLI, the Dagster asset, simulate's log)
    report.held = [draft for draft in drafts if draft.held_reason]
    drafts = [draft for draft in drafts if not draft.held_reason]
    with ledger(settings) as conn:
        migrate(conn)
        if terms is not None:  # coupons, taxes, wallets from the catalog (idempotent)
            apply_commercial_terms(conn, terms)
        # before finalizing: the invoices this close issues consume the credit
        report.credit_notes = credit_unused_subscription_days(conn, subscription_ends, as_of_utc)
        report.invoices = finalize_drafts(conn, drafts)
        for invoice in report.invoices:
            pdf = Path(invoice.pdf_path) if invoice.pdf_path else None
            if pdf is None or not pdf.exists():
                pdf = render_invoice_pdf(invoice, seller or Seller(), settings.invoices_dir)
                record_pdf_path(conn, invoice.id, pdf)
            report.pdfs[invoice.number] = pdf
    with open_warehouse(settings) as warehouse:
        mirror_billed_fees(warehouse, report.invoices, events_read_by_invoice(drafts, report.invoices))
    collect_and_deliver(settings, report)  # issue 6: payments, then webhooks
    # -- issue 7: ledger copy -> finance marts -> reporting snapshot (billhouse/ledger_sync.py)
    if refresh_finance_marts:
        from billhouse.ledger_sync import refresh_finance

        report.dbt_summary += f"; finance: {refresh_finance(settings, as_of_utc).dbt_summary}"
    # -- issue 7 (end)
    return report


def held_summary(draft: InvoiceDraft) -> str:
    """One line on a held draft: which invoice (customer/currency/issuing date), and why."""
    return f"invoice {draft.invoice_key}: {draft.held_reason}"


BILLED_FEES_TABLE = f"{RAW_SCHEMA}.{BILLED_FEES.name}"


def events_read_by_invoice(drafts: list[InvoiceDraft], invoices: list[FinalizedInvoice]) -> dict[str, EventsRead]:
    """The events each invoice this close finalized was built from (its draft's).

    Only when the customer's latest invoice of this close (per currency: the one that
    carries its late adjustments) was finalized by this close too: otherwise a re-run
    found it already finalized, built from fewer events, and the customer's invoices are
    left without, so that later closes fall back to the ingestion-time rule of
    int_late_usage_periods for them. Invoices found already finalized get none."""
    read = {draft.invoice_key: draft.events_read for draft in drafts if draft.events_read is not None}
    latest: dict[tuple[str, str], FinalizedInvoice] = {}
    for invoice in invoices:
        group = (invoice.external_customer_id, invoice.currency)
        if group not in latest or invoice.issuing_date > latest[group].issuing_date:
            latest[group] = invoice
    return {
        invoice.invoice_key: read[invoice.invoice_key]
        for invoice in invoices
        if invoice.created
        and invoice.invoice_key in read
        and latest[(invoice.external_customer_id, invoice.currency)].created
    }


def mirror_billed_fees(
    warehouse: Warehouse, invoices: list[FinalizedInvoice], events_read: Mapping[str, EventsRead] | None = None
) -> int:
    """Copy the fees of finalized invoices into billed_fees, each fee once (by fee_key),
    with the events each invoice was built from when known (``events_read``)."""
    events_read = events_read or {}
    keys = {invoice.invoice_key for invoice in invoices}
    present = {
        row["fee_key"] for row in _fees_issued_on(warehouse, {invoice.issuing_date for invoice in invoices})
        if row["invoice_key"] in keys
    }
    rows = []
    for invoice in invoices:
        read = events_read.get(invoice.invoice_key)
        rows += [
            {
                "fee_key": fee.fee_key,
                "adjusted_fee_key": adjusted_fee_key(fee.fee_key),
                "invoice_key": invoice.invoice_key,
                "issuing_date": invoice.issuing_date,
                "kind": fee.kind,
                "external_subscription_id": fee.external_subscription_id or "",
                "period_start": fee.period_start,
                "period_end": fee.period_end,
                "units": fee.units,
                "precise_amount": fee.precise_amount,
                "amount_cents": fee.amount_cents,
                "events_through_block": read.through_block if read else None,
                "events_table_uuid": read.table_uuid if read else None,
            }
            for fee in invoice.fees
            if fee.fee_key not in present
        ]
    warehouse.insert_rows(BILLED_FEES, rows)
    return len(rows)


def _fees_issued_on(warehouse: Warehouse | Any, dates: set[date]) -> list[dict[str, Any]]:
    """The mirrored fees of invoices issued on these dates (a fee's invoice fixes its
    issuing date): on ClickHouse the dates are a PREWHERE, so the fees of other days,
    which grow by every close, are not read beyond that column."""
    if not dates:
        return []
    listed = ", ".join(f"'{day.isoformat()}'" for day in sorted(dates))
    where = "prewhere" if isinstance(warehouse, Warehouse) else "where"
    return warehouse.query(
        f"select invoice_key, fee_key from {BILLED_FEES_TABLE} {where} issuing_date in ({listed})"
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- issue 6: collection and webhook delivery after finalization (begin) ----------


def collect_and_deliver(settings: Settings, report: CloseReport) -> None:
    """Charge what is due through Stripe if configured, then deliver the webhook outbox.

    Collection runs only when ``STRIPE_API_KEY`` is set (``STRIPE_API_BASE`` optional,
    retry schedule from ``BILLHOUSE_RETRY_AFTER_DAYS``); it is a full ``collect`` run
    over the ledger — this close's invoices and any earlier one still due — and
    charges each invoice at most once, so re-running a close charges nothing more.
    Delivery runs when at least one webhook endpoint is registered, after collection,
    so the ``invoice.payment_*`` events of this close go out with the invoice events.
    A Stripe outage is recorded per invoice in ``report.payments.errors`` (retried by
    the next run), it does not undo the close.
    """
    gateway = StripeGateway.from_env() if os.environ.get("STRIPE_API_KEY") else None
    with ledger(settings) as conn:
        if gateway is not None:
            report.payments = collect(conn, gateway, policy=PaymentPolicy.from_env())
        if list_webhook_endpoints(conn):
            report.webhooks = deliver_webhooks(conn)


def collection_summary(report: CloseReport) -> list[str]:
    """One line each for the payments and the webhooks of a close, when they ran."""
    lines = []
    if report.payments is not None:
        payments = report.payments
        lines.append(
            f"payments: paid {len(payments.succeeded)}, failed {len(payments.failed)},"
            f" newly overdue {len(payments.overdue)}, Stripe errors {len(payments.errors)}"
        )
    if report.webhooks is not None:
        webhooks = report.webhooks
        lines.append(
            f"webhooks: delivered {len(webhooks.delivered)}, retrying {len(webhooks.retrying)},"
            f" gave up {len(webhooks.failed)}"
        )
    return lines


# -- issue 6 (end) ------------------------------------------------------------------
