"""Errors of the ingestion package (event errors are ``billhouse.errors.EventError``)."""

from __future__ import annotations

from billhouse.errors import BillhouseError


class LandingError(BillhouseError):
    """The landing directory cannot be written (locked by another server, or broken)."""


class ApiKeyError(BillhouseError):
    """An API key cannot be created or revoked as asked."""


class LoadError(BillhouseError):
    """Landed events cannot be loaded into the warehouse."""
