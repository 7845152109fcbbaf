"""Exceptions raised by invoicing; all derive from ``InvoicingError``."""

from __future__ import annotations

from billhouse.errors import BillhouseError

__all__ = [
    "BillingEntityPrefixError",
    "FeeAlreadyBilledError",
    "InvalidDraftError",
    "InvoiceKeyConflictError",
    "InvoiceNotFoundError",
    "InvoicingError",
    "MigrationError",
    "TransactionStateError",
    "UnknownCurrencyError",
]


class InvoicingError(BillhouseError):
    """Base class of invoicing errors."""


class MigrationError(InvoicingError):
    """The ledger schema cannot be brought up to date (bad file, edited migration)."""


class TransactionStateError(InvoicingError):
    """The connection is inside a transaction where none may be open, or vice versa."""


class UnknownCurrencyError(InvoicingError, ValueError):
    """The currency code is not an ISO 4217 code billhouse knows."""


class InvalidDraftError(InvoicingError, ValueError):
    """An invoice draft is inconsistent (totals, currency exponent, empty key)."""


class BillingEntityPrefixError(InvoicingError):
    """The prefix asked for differs from the one the billing entity numbers with."""


class InvoiceNotFoundError(InvoicingError, LookupError):
    """No invoice with this id or number in the ledger."""


class InvoiceKeyConflictError(InvoicingError):
    """An invoice with this invoice_key exists for another billing entity."""


class FeeAlreadyBilledError(InvoicingError):
    """A fee of the draft is already on another invoice; nothing was written."""

    def __init__(self, invoice_key: str, detail: str) -> None:
        super().__init__(f"draft {invoice_key!r}: a fee is already billed ({detail})")
        self.invoice_key = invoice_key
