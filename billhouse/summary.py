"""Plain-text tables of invoices for the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from invoicing.ledger import FinalizedInvoice
from invoicing.money import format_minor_units


def invoice_rows(invoices: Iterable[FinalizedInvoice]) -> list[tuple[str, ...]]:
    return [
        (
            invoice.number,
            invoice.external_customer_id,
            invoice.customer_name,
            invoice.issuing_date.isoformat(),
            format_minor_units(invoice.total_cents, invoice.currency),
            "new" if invoice.created else "existing",
        )
        for invoice in sorted(invoices, key=lambda i: i.sequential_id)
    ]


def print_invoices(invoices: Iterable[FinalizedInvoice], pdfs: Mapping[str, Path]) -> None:
    header = ("number", "customer", "name", "issued", "total", "")
    rows = invoice_rows(invoices)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right_aligned = {4}
    for row in [header, *rows]:
        cells = [cell.rjust(w) if i in right_aligned else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    folders = {path.parent for path in pdfs.values()}
    for folder in sorted(folders):
        print(f"\n{len(pdfs)} PDF invoices in {folder}")
