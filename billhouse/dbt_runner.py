"""Run the dbt project as the stock ``dbt`` CLI, in a subprocess.

A subprocess (not dbt's in-process runner) on purpose: it is how dagster-dbt runs dbt,
and it makes the chDB store's one-process rule explicit — the caller must not have the
store open while dbt runs; ``run_dbt`` holds the store lock for dbt (billhouse/store_lock.py),
so other billhouse steps wait for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billhouse.errors import BillhouseError
from billhouse.settings import PROJECT_DIR, Settings
from billhouse.store_lock import store_lock


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


# The settings of one close run (macro close_setting), passed as environment variables
# rather than --vars: dbt re-parses the whole project when --vars change (each close's
# window does); the macro reads the environment only when models compile, so a new
# window re-parses nothing.
CLOSE_SETTINGS = {
    name: "BILLHOUSE_" + name.upper() for name in ("as_of", "close_from", "close_timezone", "finance_as_of")
}


def split_variables(variables: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment of the close settings, remaining dbt vars). Every close setting not
    given is set to nothing, so no value leaks from the caller's environment."""
    environment = {env_name: "" for env_name in CLOSE_SETTINGS.values()}
    remaining: dict[str, Any] = {}
    for name, value in (variables or {}).items():
        if name in CLOSE_SETTINGS:
            environment[CLOSE_SETTINGS[name]] = str(value)
        else:
            remaining[name] = value
    return environment, remaining


def apply_close_settings(env: dict[str, str], settings_environment: Mapping[str, str]) -> None:
    """Put the given close settings into ``env`` and remove the others (an empty value
    means "not given": the dbt var applies)."""
    for env_name, value in settings_environment.items():
        if value:
            env[env_name] = value
        else:
            env.pop(env_name, None)


@contextmanager
def close_settings_environment(variables: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    """For runners that start dbt from this process's environment (dagster-dbt): set the
    close settings in ``os.environ`` while the block runs; yield the remaining dbt vars."""
    settings_environment, remaining = split_variables(variables)
    saved = {env_name: os.environ.get(env_name) for env_name in settings_environment}
    apply_close_settings(os.environ, settings_environment)  # type: ignore[arg-type]
    try:
        yield remaining
    finally:
        for env_name, value in saved.items():
            if value is None:
                os.environ.pop(env_name, None)
            else:
                os.environ[env_name] = value


def store_lock_of(settings: Settings) -> AbstractContextManager[None]:
    """The embedded store's lock while dbt runs on it (nothing for PostgreSQL)."""
    if settings.warehouse_target == "postgres":
        return nullcontext()
    return store_lock(settings.data_dir)


def run_dbt(settings: Settings, args: list[str], variables: dict[str, Any] | None = None) -> DbtResult:
    """Run ``dbt <args>`` on this project; raise DbtRunError with the failures on error.
    The close settings among ``variables`` go to dbt as environment variables, the rest
    as ``--vars``."""
    settings_environment, variables = split_variables(variables)
    env = dbt_env(settings)
    apply_close_settings(env, settings_environment)
    command = [
        *args,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(settings.dbt_target_dir),
        "--log-path", str(settings.dbt_log_dir),
    ]
    if variables:
        command += ["--vars", json.dumps(variables)]
    with store_lock_of(settings):
        completed = subprocess.run(
            [dbt_executable(), *command],
            cwd=PROJECT_DIR,
            env=env,
            capture_output=True,
            text=True,
        )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise DbtRunError(command, output)
    return DbtResult(command, output)
