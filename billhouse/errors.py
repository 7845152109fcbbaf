"""Exceptions that carry the offending place, field and reason.

The CLI prints ``str(error)`` as one line; nothing here should need a traceback to
be understood.
"""

from __future__ import annotations


class BillhouseError(Exception):
    """Base of every error billhouse reports to a user."""


class CatalogError(BillhouseError):
    """A pricing catalog, customer or subscription definition is invalid."""

    def __init__(self, where: str, field: str, reason: str) -> None:
        self.where = where
        self.field = field
        self.reason = reason
        super().__init__(f"{where}: field '{field}': {reason}")


class EventError(BillhouseError):
    """An event cannot be accepted; ``index`` is its position in the batch."""

    def __init__(self, index: int, field: str, reason: str) -> None:
        self.index = index
        self.field = field
        self.reason = reason
        super().__init__(f"event[{index}]: field '{field}': {reason}")
