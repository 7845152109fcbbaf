"""The finance snapshot: the marts' monthly figures in one small JSON file.

The reporting API and ``billhouse report`` must not hold the embedded store (one
process per store, and a close may be running), so after each finance build the close
exports what they serve — gross revenue, revenue by plan, invoiced usage, MRR with its
movements, overdue balances and receivables aging — to ``<data dir>/reporting/
finance.json``, written to a temporary file and renamed (readers see the old file or
the new one, never half of one). Amounts are integer minor units; months are the
first day of the month (ISO dates).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

MODELS_SCHEMA = "billhouse"


def snapshot_path(data_dir: Path) -> Path:
    return data_dir / "reporting" / "finance.json"


def _queries(schema: str) -> dict[str, str]:
    return {
        "gross_revenue": (
            "SELECT revenue_month AS month, currency, sum(net_revenue_cents) AS amount_cents,"
            " count(DISTINCT CASE WHEN line_type = 'fee' THEN invoice_id END) AS invoices_count"
            f" FROM {schema}.fct_revenue GROUP BY revenue_month, currency"
        ),
        "revenue_by_plan": (
            "SELECT revenue_month AS month, currency, plan_code AS plan, sum(net_revenue_cents) AS amount_cents"
            f" FROM {schema}.fct_revenue GROUP BY revenue_month, currency, plan_code"
        ),
        "invoiced_usage": (
            "SELECT revenue_month AS month, currency, billable_metric_code AS code,"
            " sum(gross_amount_cents) AS amount_cents"
            f" FROM {schema}.fct_revenue WHERE line_type = 'fee' AND fee_kind = 'charge'"
            " GROUP BY revenue_month, currency, billable_metric_code"
        ),
        "mrr": (
            "SELECT mrr_month AS month, currency, sum(ending_mrr_cents) AS amount_cents,"
            " sum(beginning_mrr_cents) AS beginning_cents, sum(new_mrr_cents) AS new_cents,"
            " sum(expansion_mrr_cents) AS expansion_cents, sum(contraction_mrr_cents) AS contraction_cents,"
            " sum(churned_mrr_cents) AS churned_cents, sum(reactivation_mrr_cents) AS reactivation_cents"
            f" FROM {schema}.fct_mrr GROUP BY mrr_month, currency"
        ),
        "overdue_invoices": (
            "SELECT due_date, currency, invoice_id, open_amount_cents"
            f" FROM {schema}.int_receivables_open_invoices WHERE days_past_due > 0"
        ),
        "aging": (
            "SELECT external_customer_id, customer_name, currency, open_invoices_count, open_amount_cents,"
            " current_cents, past_due_1_30_cents, past_due_31_60_cents, past_due_61_90_cents,"
            f" past_due_over_90_cents, overdue_cents FROM {schema}.fct_receivables_aging"
        ),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "as_integer_ratio") and not isinstance(value, (int, float)):  # Decimal sums (PostgreSQL)
        return int(value)
    return value


def _rows(rows: Iterable[dict[str, Any]], order: tuple[str, ...]) -> list[dict[str, Any]]:
    plain = [{key: _plain(value) for key, value in row.items()} for row in rows]
    return sorted(plain, key=lambda row: tuple(str(row[key]) for key in order))


def read_marts(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The snapshot's figures, read from the marts (holds the store while reading)."""
    with open_warehouse(settings) as warehouse:
        raw = {name: warehouse.query(query) for name, query in _queries(MODELS_SCHEMA).items()}
    overdue: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _rows(raw.pop("overdue_invoices"), ("due_date", "currency", "invoice_id")):
        month = row["due_date"][:8] + "01"
        entry = overdue.setdefault(
            (month, row["currency"]), {"month": month, "currency": row["currency"], "amount_cents": 0,
                                       "lago_invoice_ids": []}
        )
        entry["amount_cents"] += row["open_amount_cents"]
        entry["lago_invoice_ids"].append(row["invoice_id"])
    return {
        "gross_revenue": _rows(raw["gross_revenue"], ("month", "currency")),
        "revenue_by_plan": _rows(
            ({**row, "plan": row["plan"] or "(add-ons)"} for row in raw["revenue_by_plan"]), ("month", "currency", "plan")
        ),
        "invoiced_usage": _rows(raw["invoiced_usage"], ("month", "currency", "code")),
        "mrr": _rows(raw["mrr"], ("month", "currency")),
        "overdue_balance": [overdue[key] for key in sorted(overdue)],
        "aging": _rows(raw["aging"], ("currency", "external_customer_id")),
    }


def export_snapshot(settings: Settings, as_of: datetime) -> Path:
    """Write the snapshot of the marts as of ``as_of``; return its path."""
    figures = read_marts(settings)
    document = {
        "as_of": as_of.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exported_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **figures,
    }
    path = snapshot_path(settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(temporary, path)
    return path


def load_snapshot(data_dir: Path) -> dict[str, Any] | None:
    """The last exported snapshot, or None before the first close."""
    path = snapshot_path(data_dir)
    if not path.exists():
        return None
    return json.loads(path.read_text())
