"""The billing close: rate every period that ended by ``as_of`` and invoice it.

Steps, each owning its engine only while it runs (chDB admits one process per store):
1. dbt builds staging → metering → rating → invoice drafts on the warehouse;
2. the drafts are read back;
3. each draft is finalized into the ledger in its own transaction (idempotent by
   invoice key, gapless numbers);
4. each invoice without a PDF gets one;
5. (issue 6) payments are collected through Stripe if ``STRIPE_API_KEY`` is set, then
   the webhook outbox is delivered if endpoints are registered (``collect_and_deliver``).

Running the same close again changes nothing: no new invoice, no new number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from billhouse.catalog import Catalog
from billhouse.commercial_terms import CommercialTerms, apply_commercial_terms
from billhouse.dbt_runner import run_dbt
from billhouse.events import load_events
from billhouse.ledger_connection import ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.config import landing_dir
from ingestion.loader import load_landed_events
from invoicing.drafts import read_invoice_drafts
from invoicing.finalize import finalize_drafts
from invoicing.ledger import FinalizedInvoice, record_pdf_path
from invoicing.migrations import migrate
from invoicing.pdf import Seller, render_invoice_pdf
from invoicing.dunning import PaymentPolicy
from invoicing.payments import CollectionReport, collect
from invoicing.stripe_gateway import StripeGateway
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

    @property
    def created(self) -> list[FinalizedInvoice]:
        return [invoice for invoice in self.invoices if invoice.created]


def load_inputs(settings: Settings, catalog: Catalog, events: list[dict]) -> int:
    """Replace the catalog, customers and subscriptions; append the events."""
    with open_warehouse(settings) as warehouse:
        warehouse.replace_catalog(catalog)
        return load_events(warehouse, events, catalog)


def close(
    settings: Settings,
    as_of: datetime,
    seller: Seller | None = None,
    terms: CommercialTerms | None = None,
    refresh_finance_marts: bool = True,
) -> CloseReport:
    """Bill every period ended by ``as_of``; ``refresh_finance_marts=False`` skips the
    finance marts (a preview such as ``simulate`` has no finance reader)."""
    as_of_utc = as_of.astimezone(timezone.utc)
    with open_warehouse(settings) as warehouse:  # creates the raw tables dbt reads as sources
        # issue 5: events the API accepted since the last close, loaded exactly once
        load_landed_events(warehouse, landing_dir(settings))
    dbt = run_dbt(settings, ["build"], {"as_of": as_of_utc.strftime("%Y-%m-%dT%H:%M:%SZ")})
    with open_warehouse(settings) as warehouse:
        drafts = read_invoice_drafts(warehouse)
    report = CloseReport(as_of=as_of_utc, dbt_summary=dbt.summary)
    with ledger(settings) as conn:
        migrate(conn)
        if terms is not None:  # coupons, taxes, wallets from the catalog (idempotent)
            apply_commercial_terms(conn, terms)
        report.invoices = finalize_drafts(conn, drafts)
        for invoice in report.invoices:
            pdf = Path(invoice.pdf_path) if invoice.pdf_path else None
            if pdf is None or not pdf.exists():
                pdf = render_invoice_pdf(invoice, seller or Seller(), settings.invoices_dir)
                record_pdf_path(conn, invoice.id, pdf)
            report.pdfs[invoice.number] = pdf
    collect_and_deliver(settings, report)  # issue 6: payments, then webhooks
    # -- issue 7: ledger copy -> finance marts -> reporting snapshot (billhouse/ledger_sync.py)
    if refresh_finance_marts:
        from billhouse.ledger_sync import refresh_finance

        report.dbt_summary += f"; finance: {refresh_finance(settings, as_of_utc).dbt_summary}"
    # -- issue 7 (end)
    return report


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
