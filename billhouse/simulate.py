"""``billhouse simulate SCENARIO.yml [--json]``: preview the invoices a scenario produces.

A scenario (docs/simulate.md, shared/design/scenario-format.md) holds a catalog,
customers, subscriptions, events and an ``as_of`` instant. The real pipeline runs on
a throwaway embedded warehouse and ledger: the catalog and events are loaded, dbt
builds and tests every model, every period ended by ``as_of`` is finalized. Nothing
of the user's own data directory is touched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from billhouse.catalog import parse_catalog, parse_instant
from billhouse.close import close, held_summary, load_inputs
from billhouse.commercial_terms import parse_commercial_terms
from billhouse.errors import CatalogError
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from invoicing.ledger import FinalizedInvoice
from invoicing.money import format_amount, format_minor_units
from invoicing.pdf import Seller


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    source: str
    as_of: datetime
    document: dict[str, Any]
    events: list[dict[str, Any]]


def read_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(str(path), "(file)", f"cannot be read: {exc.strerror}") from exc
    try:
        document = json.loads(text, parse_float=Decimal) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CatalogError(str(path), "(document)", f"not valid YAML/JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise CatalogError(str(path), "(document)", "must be a mapping")
    if "as_of" not in document:
        raise CatalogError(str(path), "as_of", "is required: bill every period ended at or before this instant")
    try:
        as_of = parse_instant(document["as_of"])
    except ValueError as exc:
        raise CatalogError(str(path), "as_of", str(exc)) from exc
    events = document.get("events") or []
    if not isinstance(events, list):
        raise CatalogError(str(path), "events", "must be a list")
    return Scenario(str(path), as_of, document, events)


def simulate(scenario: Scenario, warehouse_target: str | None = None) -> list[FinalizedInvoice]:
    """Run the scenario through the real pipeline on a throwaway data directory, on the
    embedded ClickHouse (default, or ``BILLHOUSE_TARGET``) or ``postgres``."""
    catalog = parse_catalog(scenario.document, source=scenario.source)
    terms = parse_commercial_terms(scenario.document, source=scenario.source)
    data_dir = Path(tempfile.mkdtemp(prefix="billhouse-simulate-"))
    target = warehouse_target or os.environ.get("BILLHOUSE_TARGET") or "chdb"
    settings = Settings(data_dir=data_dir, warehouse_target=target)
    try:
        load_inputs(settings, catalog, scenario.events)
        seller = Seller.from_organization(catalog.organization) if catalog.organization else None
        report = close(settings, scenario.as_of, seller, terms=terms, refresh_finance_marts=False)
        for draft in report.held:  # not in the preview: say why
            log.warning("held, not issued: %s", held_summary(draft))
        return report.invoices
    finally:
        stop_ledger(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


# --- output ------------------------------------------------------------------------


def invoices_as_json(invoices: list[FinalizedInvoice]) -> dict[str, Any]:
    return {"invoices": [_invoice_json(invoice) for invoice in _ordered(invoices)]}


def _ordered(invoices: list[FinalizedInvoice]) -> list[FinalizedInvoice]:
    return sorted(invoices, key=lambda i: (i.issuing_date, i.external_customer_id, i.currency))


def _invoice_json(invoice: FinalizedInvoice) -> dict[str, Any]:
    return {
        "number": invoice.number,
        "external_customer_id": invoice.external_customer_id,
        "issuing_date": invoice.issuing_date.isoformat(),
        "currency": invoice.currency,
        "fees": [_fee_json(fee) for fee in invoice.fees],
        "sub_total_cents": invoice.sub_total_cents,
        "coupons_cents": getattr(invoice, "coupons_cents", 0),
        "taxes_cents": getattr(invoice, "taxes_cents", 0),
        "credits_cents": getattr(invoice, "credits_cents", 0),
        "total_cents": invoice.total_cents,
    }


def _fee_json(fee: Any) -> dict[str, Any]:
    details = dict(getattr(fee, "details", None) or {})
    return {
        "kind": fee.kind,
        "external_subscription_id": fee.external_subscription_id,
        "period_start": fee.period_start.isoformat() if fee.period_start else None,
        "period_end": fee.period_end.isoformat() if fee.period_end else None,
        "billable_metric_code": fee.billable_metric_code,
        "charge_model": fee.charge_model,
        "invoice_display_name": fee.invoice_display_name,
        "filter": details.pop("filter", None),
        "group": details.pop("group", None),
        "units": _decimal_text(fee.units),
        "amount_cents": fee.amount_cents,
        "precise_amount": _decimal_text(fee.precise_amount),
        "details": details,
    }


def _decimal_text(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def invoices_as_text(invoices: list[FinalizedInvoice]) -> str:
    """A readable preview: one block per invoice, one line per fee, tiers indented."""
    lines: list[str] = []
    for invoice in _ordered(invoices):
        money = lambda cents: format_minor_units(cents, invoice.currency)  # noqa: E731
        lines.append(
            f"{invoice.number}  {invoice.external_customer_id}  issued {invoice.issuing_date}"
            f"  {invoice.currency}"
        )
        rows = []
        for fee in invoice.fees:
            fee_json = _fee_json(fee)
            label = fee.invoice_display_name
            if fee_json["group"]:
                label += " [" + ", ".join(f"{k}={v}" for k, v in fee_json["group"].items()) + "]"
            what = fee.kind if fee.kind != "charge" else (fee.charge_model or "charge")
            period = f"{fee.period_start:%Y-%m-%d}→{fee.period_end:%Y-%m-%d}" if fee.period_start else ""
            rows.append((what, label, period, fee_json["units"], money(fee.amount_cents)))
            for tier in fee_json["details"].get("tiers", []):
                if Decimal(tier["units"]) == 0 and Decimal(tier["amount"]) == 0:
                    continue
                upper = tier["to_value"] or "∞"
                if tier["per_unit_amount"] is not None:
                    price = f"× {format_amount(Decimal(tier['per_unit_amount']), invoice.currency)}"
                else:
                    price = f"× {tier['rate']}%"
                if Decimal(tier["flat_amount"]):
                    price += f" + {format_amount(Decimal(tier['flat_amount']), invoice.currency)}"
                rows.append(
                    ("", f"  {tier['from_value']}–{upper}  {price}", "",
                     tier["units"], format_amount(Decimal(tier["amount"]), invoice.currency))
                )
        widths = [max(len(r[i]) for r in rows) for i in range(5)] if rows else [0] * 5
        for row in rows:
            lines.append(
                "  " + "  ".join(
                    cell.rjust(widths[i]) if i >= 3 else cell.ljust(widths[i]) for i, cell in enumerate(row)
                ).rstrip()
            )
        totals = [("subtotal", invoice.sub_total_cents)]
        for name in ("coupons_cents", "taxes_cents", "credits_cents"):
            value = getattr(invoice, name, 0)
            if value:
                totals.append((name.removesuffix("_cents"), -value if name != "taxes_cents" else value))
        totals.append(("total", invoice.total_cents))
        width = sum(widths) + 2 * 4 + 2
        for name, cents in totals:
            lines.append(f"{name:>{width - 16}} {money(cents):>15}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
