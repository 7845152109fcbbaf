"""Shared fixtures: one billed warehouse and ledger per test session.

``billed`` loads a small, hand-computed catalog and event set into a fresh embedded
ClickHouse store, then closes twice (as of 2026-11-01, then 2026-12-01) and once more
(the re-run), against a fresh embedded PostgreSQL ledger. Tests assert on the reports,
the warehouse models and the ledger; nothing is rebuilt per test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from billhouse.catalog import Catalog, parse_catalog
from billhouse.close import CloseReport, close, load_inputs
from billhouse.events import load_events
from billhouse.ledger_connection import stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse

NOV_1 = datetime(2026, 11, 1, tzinfo=timezone.utc)
DEC_1 = datetime(2026, 12, 1, tzinfo=timezone.utc)

CATALOG = {
    "billable_metrics": [
        {"code": "api_calls", "name": "API calls", "aggregation_type": "count_agg"},
        {"code": "storage_gb", "name": "Storage", "aggregation_type": "sum_agg", "field_name": "gb"},
        {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "tokens"},
    ],
    "plans": [
        {
            "code": "starter",
            "name": "Starter",
            "interval": "monthly",
            "amount_cents": 1000,
            "amount_currency": "EUR",
            "charges": [
                {"billable_metric_code": "api_calls", "charge_model": "standard", "properties": {"amount": "0.003"}},
                {"billable_metric_code": "storage_gb", "charge_model": "standard", "properties": {"amount": "0.1"}},
            ],
        },
        {
            # float traps: 1.005 x 100 = 100.49999999999999 in binary floating point
            "code": "precise",
            "name": "Precise",
            "interval": "monthly",
            "amount_cents": 0,
            "amount_currency": "EUR",
            "charges": [
                {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1.005"}},
                {"billable_metric_code": "storage_gb", "charge_model": "standard",
                 "properties": {"per_unit_amount": "0.003"}},
            ],
        },
        {
            "code": "tokyo",
            "name": "Tokyo",
            "interval": "monthly",
            "amount_cents": 9800,
            "amount_currency": "JPY",
            "charges": [
                {"billable_metric_code": "api_calls", "charge_model": "standard", "properties": {"amount": "0.5"}},
            ],
        },
    ],
    "customers": [
        {"external_id": "cus_a", "name": "Alpha SA", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_b", "name": "Beta GmbH", "currency": "EUR", "timezone": "UTC"},
        {"external_id": "cus_j", "name": "Jiro K.K.", "currency": "JPY", "timezone": "UTC"},
    ],
    "subscriptions": [
        {"external_id": "sub_a", "external_customer_id": "cus_a", "plan_code": "starter",
         "subscription_at": "2026-10-01T00:00:00Z"},
        {"external_id": "sub_b", "external_customer_id": "cus_b", "plan_code": "precise",
         "subscription_at": "2026-10-01T00:00:00Z"},
        {"external_id": "sub_j", "external_customer_id": "cus_j", "plan_code": "tokyo",
         "subscription_at": "2026-10-01T00:00:00Z"},
    ],
}


def naive_utc(value: datetime) -> datetime:
    """A warehouse timestamp as naive UTC (chDB returns them aware, PostgreSQL naive)."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def query_warehouse(settings: Settings, sql: str) -> list[dict]:
    with open_warehouse(settings) as warehouse:
        return warehouse.query(sql)


def relations_read_outside_lineage(settings: Settings) -> set[tuple[str, str]]:
    """(model, relation) pairs where a model's statements (its compile-time queries
    included, from dbt's debug log) named another model of the project that is not
    upstream of it: with several dbt threads, that relation could be rebuilt meanwhile."""
    manifest = json.loads((settings.dbt_target_dir / "manifest.json").read_text())
    parents: dict[str, list[str]] = manifest["parent_map"]
    models = {unique_id.split(".")[-1]: unique_id for unique_id in manifest["nodes"]}

    def upstream(unique_id: str, seen: set[str]) -> set[str]:
        for parent in parents.get(unique_id, []):
            if parent not in seen:
                seen.add(parent)
                upstream(parent, seen)
        return seen

    log = "".join(path.read_text(errors="replace") for path in settings.dbt_log_dir.rglob("dbt.log*"))
    outside: set[tuple[str, str]] = set()
    # a statement runs to the next log line (the time that starts it, after a colour code)
    next_line = r"(?=\n(?:\x1b\[0m)?\d\d:\d\d:\d\d\.\d+ |\Z)"
    for statement in re.finditer(r"On (model\.billhouse\.\w+): (.*?)" + next_line, log, re.S):
        node, sql = statement.groups()
        if node not in parents:
            continue
        ancestors = upstream(node, set())
        for name in set(re.findall(r"[`\"]billhouse[`\"]\.[`\"](\w+)[`\"]", sql)):
            name = re.sub(r"__dbt_(backup|tmp|new_data)$", "", name)
            if name in models and models[name] != node and models[name] not in ancestors:
                outside.add((node, name))
    return outside


def _event(tx: str, sub: str, code: str, ts: str, **properties: object) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code, "timestamp": ts,
            "properties": properties}


FIRST_BATCH = [
    # sub_a, October: 5 distinct calls (one also sent twice below), 2.5 GB of storage.
    *[_event(f"a-call-{i}", "sub_a", "api_calls", f"2026-10-0{i + 1}T08:00:00Z") for i in range(5)],
    _event("a-call-0", "sub_a", "api_calls", "2026-10-01T08:00:00Z"),  # same batch duplicate
    _event("a-store-1", "sub_a", "storage_gb", "2026-10-10T00:00:00Z", gb="2"),
    _event("a-store-2", "sub_a", "storage_gb", "2026-10-20T00:00:00Z", gb=0.5),
    # the last millisecond of October belongs to October; midnight belongs to November
    _event("a-call-edge-oct", "sub_a", "api_calls", "2026-10-31T23:59:59.999Z"),
    _event("a-call-edge-nov", "sub_a", "api_calls", "2026-11-01T00:00:00Z"),
    # sub_b, October: 1 token at 1.005; ten readings of 0.1 GB plus ten of 0.2 GB at 0.003
    _event("b-tok-1", "sub_b", "tokens", "2026-10-05T00:00:00Z", tokens="1"),
    *[_event(f"b-st-{i}", "sub_b", "storage_gb", "2026-10-06T00:00:00Z", gb="0.1") for i in range(10)],
    *[_event(f"b-st2-{i}", "sub_b", "storage_gb", "2026-10-07T00:00:00Z", gb="0.2") for i in range(10)],
    # sub_j, October: 3 calls at 0.5 yen = 1.5 -> 2 yen (half-up, no decimals)
    *[_event(f"j-call-{i}", "sub_j", "api_calls", "2026-10-15T00:00:00Z") for i in range(3)],
]

# A later load resends two events: the same identity, even with other properties, is
# ignored (the first accepted copy wins).
SECOND_BATCH = [
    _event("a-call-1", "sub_a", "api_calls", "2026-10-02T08:00:00Z"),
    _event("a-store-1", "sub_a", "storage_gb", "2026-10-10T00:00:00Z", gb="100"),
]


@dataclass
class Billed:
    settings: Settings
    catalog: Catalog
    first_close: CloseReport
    second_close: CloseReport
    rerun_close: CloseReport

    def query(self, sql: str) -> list[dict]:
        return query_warehouse(self.settings, sql)


@pytest.fixture(scope="session")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Billed]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("billed")))
    catalog = parse_catalog(CATALOG, source="tests/conftest.py")
    load_inputs(settings, catalog, FIRST_BATCH)
    with open_warehouse(settings) as warehouse:
        load_events(warehouse, SECOND_BATCH, catalog)
    try:
        first = close(settings, NOV_1, refresh_finance_marts=False)
        second = close(settings, DEC_1, refresh_finance_marts=False)
        rerun = close(settings, DEC_1)  # the full close, finance marts included
        yield Billed(settings, catalog, first, second, rerun)
    finally:
        stop_ledger(settings)
