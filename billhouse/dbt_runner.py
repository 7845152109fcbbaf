"""Run the dbt project as the stock ``dbt`` CLI, in a subprocess.

A subprocess (not dbt's in-process runner) on purpose: it is how dagster-dbt runs dbt,
and it makes the chDB store's one-process rule explicit — the caller must not hold the
store while dbt runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billhouse.errors import BillhouseError
from billhouse.settings import PROJECT_DIR, Settings


class DbtRunError(BillhouseError):
    def __init__(self, command: list[str], output: str) -> None:
        self.command = command
        self.output = output
        markers = ("ERROR", "Error", "FAIL", "Exception", "Code:")
        failures = [line for line in output.splitlines() if any(marker in line for marker in markers)]
        detail = "\n".join(failures[-12:]) or output[-2000:]
        super().__init__(f"dbt {' '.join(command)} failed:\n{detail}")


@dataclass(frozen=True)
class DbtResult:
    command: list[str]
    output: str

    @property
    def summary(self) -> str:
        lines = [line for line in self.output.splitlines() if "Done. PASS=" in line]
        return lines[-1].split("Done. ", 1)[-1] if lines else ""


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["BILLHOUSE_CHDB_PATH"] = str(settings.chdb_path)
    env["BILLHOUSE_TARGET"] = settings.warehouse_target
    if settings.warehouse_target == "postgres":
        from psycopg.conninfo import conninfo_to_dict

        from billhouse.ledger_connection import sibling_database_url
        from billhouse.postgres_warehouse import WAREHOUSE_DATABASE

        params = conninfo_to_dict(sibling_database_url(settings, WAREHOUSE_DATABASE))
        env["BILLHOUSE_PG_HOST"] = str(params.get("host") or "localhost")
        env["BILLHOUSE_PG_PORT"] = str(params.get("port") or 5432)
        env["BILLHOUSE_PG_USER"] = str(params.get("user") or "postgres")
        env["BILLHOUSE_PG_PASSWORD"] = str(params.get("password") or "")
        env["BILLHOUSE_PG_DATABASE"] = str(params["dbname"])
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


def run_dbt(settings: Settings, args: list[str], variables: dict[str, Any] | None = None) -> DbtResult:
    """Run ``dbt <args>`` on this project; raise DbtRunError with the failures on error."""
    command = [
        *args,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(settings.dbt_target_dir),
        "--log-path", str(settings.dbt_log_dir),
    ]
    if variables:
        command += ["--vars", json.dumps(variables)]
    completed = subprocess.run(
        [dbt_executable(), *command],
        cwd=PROJECT_DIR,
        env=dbt_env(settings),
        capture_output=True,
        text=True,
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise DbtRunError(command, output)
    return DbtResult(command, output)
