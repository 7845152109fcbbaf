"""Lago's analytics endpoints, served from the finance snapshot the close exports.

    GET /api/v1/analytics/gross_revenue    {"gross_revenues": [{month, amount_cents, currency, invoices_count}]}
    GET /api/v1/analytics/mrr              {"mrrs": [{month, amount_cents, currency}]}
    GET /api/v1/analytics/overdue_balance  {"overdue_balances": [{month, amount_cents, currency, lago_invoice_ids}]}
    GET /api/v1/analytics/invoiced_usage   {"invoiced_usages": [{month, amount_cents, currency, code}]}

Query parameters (Lago's): ``currency`` (ISO 4217; default every currency) and
``months`` (the last N months up to the snapshot's as-of month; default all). Same
bearer key as the events API. The API process never opens the warehouse (chDB admits
one process per store and a close may be running): it reads ``reporting/finance.json``,
which the close rewrites atomically after each finance build, and re-reads it when its
modification time changes. Before the first close every list is empty.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import msgspec

from billhouse.finance_snapshot import load_snapshot, snapshot_path

_encode = msgspec.json.Encoder().encode
_JSON_HEADERS = [(b"content-type", b"application/json")]
_CURRENCY = re.compile(r"^[A-Z]{3}$")

# path -> (snapshot section, Lago's response key, fields of each item besides month/currency)
ANALYTICS = {
    "/api/v1/analytics/gross_revenue": ("gross_revenue", "gross_revenues", ("amount_cents", "invoices_count")),
    "/api/v1/analytics/mrr": ("mrr", "mrrs", ("amount_cents",)),
    "/api/v1/analytics/overdue_balance": ("overdue_balance", "overdue_balances", ("amount_cents", "lago_invoice_ids")),
    "/api/v1/analytics/invoiced_usage": ("invoiced_usage", "invoiced_usages", ("amount_cents", "code")),
}

Handler = Callable[[dict, Any], Awaitable[tuple[int, list, bytes]]]


class InvalidQuery(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SnapshotReader:
    """The last exported snapshot, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: int | None = None
        self._document: dict[str, Any] = {}

    def document(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            self._document = load_snapshot(self.path.parent.parent) or {}
            self._mtime = mtime
        return self._document


def lago_month(iso_date: str) -> str:
    return f"{iso_date[:10]}T00:00:00.000Z"


def parse_query(query_string: bytes) -> tuple[str | None, int | None]:
    params = parse_qs(query_string.decode("latin-1"))
    currency = params.get("currency", [None])[-1]
    if currency is not None and not _CURRENCY.match(currency):
        raise InvalidQuery("currency", f"must be an ISO 4217 code such as EUR, got {currency!r}")
    months_text = params.get("months", [None])[-1]
    months = None
    if months_text is not None:
        if not months_text.isdigit() or int(months_text) < 1:
            raise InvalidQuery("months", f"must be a positive integer, got {months_text!r}")
        months = int(months_text)
    return currency, months


def analytics_items(document: dict[str, Any], path: str, currency: str | None, months: int | None) -> dict[str, Any]:
    """The response body of one analytics endpoint, from a snapshot document."""
    section, key, fields = ANALYTICS[path]
    rows = document.get(section, [])
    if currency is not None:
        rows = [row for row in rows if row["currency"] == currency]
    if months is not None and document.get("as_of"):
        last = document["as_of"][:7]
        year, month = int(last[:4]), int(last[5:7]) - (months - 1)
        while month < 1:
            year, month = year - 1, month + 12
        first = f"{year:04d}-{month:02d}"
        rows = [row for row in rows if first <= row["month"][:7] <= last]
    return {key: [{"month": lago_month(row["month"]), "currency": row["currency"],
                   **{name: row[name] for name in fields}} for row in rows]}


def reporting_routes(data_dir: Path, authorize: Callable[[dict], Awaitable[None]]) -> dict[tuple[bytes, str], Handler]:
    """The GET routes to add to the API app's route table."""
    reader = SnapshotReader(snapshot_path(data_dir))

    def handler(path: str) -> Handler:
        async def handle(scope: dict, receive: Any) -> tuple[int, list, bytes]:
            await authorize(scope)
            try:
                currency, months = parse_query(scope.get("query_string", b""))
            except InvalidQuery as exc:
                body = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                        "error_details": {exc.field: [exc.reason]}}
                return 422, _JSON_HEADERS, _encode(body)
            return 200, _JSON_HEADERS, _encode(analytics_items(reader.document(), path, currency, months))

        return handle

    return {(b"GET", path): handler(path) for path in ANALYTICS}
