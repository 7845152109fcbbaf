"""The close's single pass over the events (issue 4, "closes stay cheap at scale").

What the close selector runs and what it leaves to CI, and the deduplication by
identity hash that lets the close read the events once.
"""

from __future__ import annotations

import json

from billhouse.dbt_runner import run_dbt
from billhouse.warehouse import open_warehouse

from tests.conftest import Billed


def _selected(billed: Billed, selector: str) -> list[dict]:
    result = run_dbt(billed.settings, ["ls", "--selector", selector, "--output", "json", "--quiet"])
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def test_close_selector_leaves_unit_tests_and_full_scans_to_ci(billed: Billed) -> None:
    close_nodes = _selected(billed, "close")
    billing_nodes = _selected(billed, "billing")
    close_names = {node["unique_id"] for node in close_nodes}

    models = {n["unique_id"] for n in billing_nodes if n["resource_type"] in ("model", "seed")}
    assert models and models <= close_names, "a close must build every billing model"
    assert not [n for n in close_nodes if n["resource_type"] == "unit_test"]
    assert not [n for n in close_nodes if "full_scan" in n.get("tags", [])]
    # the last check before the ledger: the invoice drafts' data tests run in every close
    draft_tests = {
        n["unique_id"] for n in billing_nodes
        if n["resource_type"] == "test" and n["original_file_path"].startswith("models/billing/")
    }
    assert draft_tests and draft_tests <= close_names
    # and CI's selector still has the full-scan checks and the unit tests
    assert [n for n in billing_nodes if "full_scan" in n.get("tags", [])]
    assert [n for n in billing_nodes if n["resource_type"] == "unit_test"]


def test_an_identity_hash_collision_never_drops_or_repeats_an_event(billed: Billed) -> None:
    """A single-copy event whose hash is listed as duplicated goes through the ranking
    of copies, and wins it: the deduplicated events do not change."""
    before = billed.query(
        "select external_subscription_id, transaction_id, properties"
        " from billhouse.int_events_deduplicated order by 1, 2"
    )
    [single] = billed.query(
        "select external_subscription_id, transaction_id, cityHash64(external_subscription_id, transaction_id) as h"
        " from billhouse_raw.events group by 1, 2 having count() = 1 order by 1, 2 limit 1"
    )
    with open_warehouse(billed.settings) as warehouse:
        warehouse.client.command(f"insert into billhouse.int_event_keys_duplicated values ({single['h']}, 2)")
        try:
            after = warehouse.query(
                "select external_subscription_id, transaction_id, properties"
                " from billhouse.int_events_deduplicated order by 1, 2"
            )
        finally:
            warehouse.client.command(
                "alter table billhouse.int_event_keys_duplicated delete"
                f" where identity_hash = {single['h']} settings mutations_sync = 1"
            )
    assert after == before


def test_resent_events_are_found_by_identity(billed: Billed) -> None:
    duplicated = billed.query("select identity_hash, copies from billhouse.int_event_keys_duplicated")
    raw = billed.query(
        "select cityHash64(external_subscription_id, transaction_id) as h, count() as n"
        " from billhouse_raw.events group by h having n > 1"
    )
    assert sorted((r["identity_hash"], r["copies"]) for r in duplicated) == sorted((r["h"], r["n"]) for r in raw)
    assert duplicated, "the session warehouse resends events (tests/conftest.py SECOND_BATCH)"
