"""How dbt runs: in this process, one store at a time, with a close's settings as
environment variables (partial parsing), not --vars, and the project parsed once per
process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from billhouse import dbt_runner
from billhouse.close import close_variables
from billhouse.dbt_runner import (
    dbt_environment,
    parsed_project_key,
    patched_environment,
    project_fingerprint,
    run_dbt,
    split_variables,
)
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse


def test_close_settings_become_environment_variables_and_the_rest_stays_vars() -> None:
    environment, remaining = split_variables(
        {"as_of": "2026-12-01T00:00:00Z", "close_timezone": "Asia/Tokyo", "ledger_schema": "other"}
    )
    assert environment == {
        "BILLHOUSE_AS_OF": "2026-12-01T00:00:00Z",
        "BILLHOUSE_CLOSE_FROM": "",  # not given: cleared, so the dbt var's default applies
        "BILLHOUSE_CLOSE_TIMEZONE": "Asia/Tokyo",
        "BILLHOUSE_FINANCE_AS_OF": "",
        "BILLHOUSE_BUILD_EVERY_MODEL": "",
        "BILLHOUSE_READ_EVENT_DAY_TOTALS": "",
    }
    assert remaining == {"ledger_schema": "other"}


def test_the_close_settings_are_set_for_dbt_then_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLHOUSE_CLOSE_FROM", "from-the-shell")
    monkeypatch.delenv("BILLHOUSE_AS_OF", raising=False)
    environment, _ = split_variables({"as_of": "2026-12-01T00:00:00Z"})
    with patched_environment(environment):
        assert os.environ["BILLHOUSE_AS_OF"] == "2026-12-01T00:00:00Z"
        assert "BILLHOUSE_CLOSE_FROM" not in os.environ  # a stale window never leaks into dbt
    assert "BILLHOUSE_AS_OF" not in os.environ
    assert os.environ["BILLHOUSE_CLOSE_FROM"] == "from-the-shell"


def test_a_new_close_window_reuses_the_parsed_project_and_still_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window is read when models compile, not while dbt parses: a close with a new
    window re-parses nothing (about a second of every close) and compiles with that window.
    Checked as a new process sees it (nothing parsed in memory: dbt's partial parsing)."""
    monkeypatch.setattr(dbt_runner, "_parsed_projects", {})
    settings = Settings(data_dir=tmp_path)
    with open_warehouse(settings):
        pass  # the raw tables (dbt sources) exist
    run_dbt(settings, ["parse"], close_variables(datetime(2026, 11, 2, tzinfo=timezone.utc)))
    later_window = close_variables(
        datetime(2026, 11, 3, 5, tzinfo=timezone.utc), datetime(2026, 11, 2, 5, tzinfo=timezone.utc), "America/New_York"
    )
    monkeypatch.setattr(dbt_runner, "_parsed_projects", {})  # as the next close's process
    result = run_dbt(settings, ["--debug", "compile", "--select", "int_billing_periods", "int_subscription_periods"], later_window)

    assert "Partial parsing enabled, no changes found, skipping parsing" in result.output
    compiled = settings.dbt_target_dir / "compiled" / "billhouse" / "models" / "metering"
    periods = (compiled / "int_billing_periods.sql").read_text()
    assert "'2026-11-02T05:00:00Z'" in periods and "'2026-11-03T05:00:00Z'" in periods
    assert "customers.timezone = 'America/New_York'" in (compiled / "int_subscription_periods.sql").read_text()


def test_dbt_runs_in_this_process_on_each_store_in_turn_and_leaves_it_free(tmp_path: Path) -> None:
    """run_dbt runs dbt in the calling process: on one store, then another, then the first
    again (dbt-clickhouse alone would skip creating the second store's schema); the
    environment it set for dbt is put back; and another process opens the store after."""
    first, second = Settings(data_dir=tmp_path / "first"), Settings(data_dir=tmp_path / "second")
    path_before = os.environ.get("BILLHOUSE_CHDB_PATH")
    for settings in (first, second, first):
        with open_warehouse(settings):
            pass  # the raw tables (dbt sources) exist
        assert run_dbt(settings, ["run", "--select", "stg_billhouse__plans"]).summary.startswith("PASS=1 ")
        with open_warehouse(settings) as warehouse:
            assert warehouse.query("select name from system.tables where database = 'billhouse'") == [
                {"name": "stg_billhouse__plans"}
            ]
    assert os.environ.get("BILLHOUSE_CHDB_PATH") == path_before
    other_process = subprocess.run(
        [sys.executable, "-c", "import sys, chdb; print(chdb.connect(sys.argv[1]).query("
         "\"select count() from system.tables where database = 'billhouse'\", 'CSV'))", str(first.chdb_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert (other_process.returncode, other_process.stdout.strip()) == (0, "1"), other_process.stderr[-500:]


def test_a_new_store_uses_the_project_parsed_for_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What dbt parses does not depend on the store: the second store's first run parses
    nothing (a full parse of a new store's project took 4.4 s), and builds from it."""
    monkeypatch.setattr(dbt_runner, "_parsed_projects", {})
    outputs = []
    for name in ("first", "second"):
        settings = Settings(data_dir=tmp_path / name)
        with open_warehouse(settings):
            pass  # the raw tables (dbt sources) exist
        result = run_dbt(settings, ["--debug", "run", "--select", "stg_billhouse__plans"])
        assert result.summary.startswith("PASS=1 ")
        assert (settings.dbt_target_dir / "manifest.json").exists()
        outputs.append(result.output)
    parsing = ("Starting full parse", "Partial parsing", "Command `cli parse`")
    assert all(message in outputs[0] for message in parsing[::2])
    assert not any(message in outputs[1] for message in parsing)


def test_a_run_writes_its_results_and_leaves_the_parsed_manifest_as_it_is(tmp_path: Path) -> None:
    # dbt would write manifest.json again after every build (0.4-0.5 s of a close);
    # the parse wrote it, run_dbt writes the run's run_results.json
    settings = Settings(data_dir=tmp_path)
    with open_warehouse(settings):
        pass
    run_dbt(settings, ["run", "--select", "stg_billhouse__plans"])
    manifest = settings.dbt_target_dir / "manifest.json"
    written = manifest.stat().st_mtime_ns
    for model in ("stg_billhouse__customers", "stg_billhouse__charges"):
        run_dbt(settings, ["run", "--select", model])
        results = json.loads((settings.dbt_target_dir / "run_results.json").read_text())
        assert [r["unique_id"] for r in results["results"]] == [f"model.billhouse.{model}"]
        assert manifest.stat().st_mtime_ns == written


def test_the_parsed_project_is_kept_per_project_files_warehouse_and_vars(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: p\n")
    model = project / "models" / "m.sql"
    model.write_text("select 1 as x")
    before = project_fingerprint(project)
    assert project_fingerprint(project) == before
    model.write_text("select 2 as x")  # same size, another modification time
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    edited = project_fingerprint(project)
    assert edited != before
    (project / "models" / "n.sql").write_text("select 1 as y")
    assert project_fingerprint(project) not in (before, edited)

    store = dbt_environment(Settings(data_dir=tmp_path / "a"))
    assert parsed_project_key(store, {}) == parsed_project_key(dbt_environment(Settings(data_dir=tmp_path / "b")), {})
    assert parsed_project_key(store, {}) != parsed_project_key(store, {"raw_schema": "other"})
    # a PostgreSQL warehouse (its environment as dbt_environment gives it, without
    # starting a server for the test)
    assert parsed_project_key(store, {}) != parsed_project_key(
        {"BILLHOUSE_TARGET": "postgres", "BILLHOUSE_PG_DATABASE": "billhouse_warehouse"}, {}
    )
