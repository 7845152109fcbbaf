"""Invoices marked billed without the ledger, for benchmarks and tests of later closes."""

from __future__ import annotations

from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse


def mark_drafts_billed(settings: Settings) -> None:
    """What finalization leaves in the warehouse (billed_fees, the ledger's mirror),
    written straight from the drafts: the next close then sees their periods as invoiced."""
    with open_warehouse(settings) as warehouse:
        warehouse.client.command(
            "INSERT INTO billhouse_raw.billed_fees SELECT f.fee_key, f.fee_key, f.invoice_key, f.issuing_date,"
            " f.fee_kind, f.external_subscription_id, f.period_start, f.period_end, f.units, f.precise_amount,"
            " f.amount_cents, d.events_through_block, d.events_table_uuid"
            " FROM billhouse.fct_invoice_draft_fees AS f"
            " INNER JOIN billhouse.fct_invoice_drafts AS d ON f.invoice_key = d.invoice_key"
        )
