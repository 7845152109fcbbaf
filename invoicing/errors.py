"""Exceptions raised by invoicing; all derive from ``InvoicingError``."""

from __future__ import annotations

from billhouse.errors import BillhouseError

__all__ = [
    "BillingEntityPrefixError",
    "CommercialTermsError",
    "CreditNoteExceedsRemainingError",
    "IdempotencyConflictError",
    "InvoiceStateError",
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


class CommercialTermsError(InvoicingError, ValueError):
    """A coupon, tax, add-on or wallet is invalid or unknown; names the object and field."""

    def __init__(self, what: str, field: str, reason: str) -> None:
        super().__init__(f"{what}: {field} {reason}")
        self.what = what
        self.field = field
        self.reason = reason


class IdempotencyConflictError(InvoicingError):
    """The idempotency key (or code) was already used for a different request."""


class InvoiceStateError(InvoicingError):
    """The invoice is not in a state that allows this (e.g. crediting a voided invoice)."""


class CreditNoteExceedsRemainingError(InvoicingError, ValueError):
    """A credit note asks for more than the invoice has left to credit or refund."""

    def __init__(self, invoice_number: str, part: str, requested: str, remaining: str) -> None:
        super().__init__(
            f"credit note refused: {part} of {requested} on invoice {invoice_number} exceeds"
            f" what remains to {'refund' if part == 'refund' else 'credit'}, {remaining}"
        )
        self.invoice_number = invoice_number
        self.part = part
        self.requested = requested
        self.remaining = remaining
