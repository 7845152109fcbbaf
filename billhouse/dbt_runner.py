"""Run the dbt project with dbt's programmatic runner, in this process.

In-process because a close invokes dbt twice (the billing build, then the finance
marts after finalization) and a process that closes again (the test suite, a backfill)
many times: importing dbt costs about 2 s, which a ``dbt`` subprocess pays at every
invocation (docs/performance.md). dbt then owns the store as any billhouse step does:
``run_dbt`` holds the store lock while it runs (billhouse/store_lock.py), and dbt closes
its chDB connection when the invocation ends. The Dagster close runs its billing build
here too, and turns dbt's result events into Dagster events (orchestration/dbt_build.py).

dbt's runner is not safe to call from two threads at once: invocations are serialized.
One process may run dbt on several stores in turn (the tests do): the chdb adapter checks
each store's schema exists, where dbt-clickhouse checks once per process
(adapters/dbt-chdb/dbt/adapters/chdb/client.py).

The parsed project is kept for the process and handed to each invocation (dbt's
``dbtRunner(manifest=...)``): what dbt parses does not depend on the store, only on the
project's files, the warehouse type and ``--vars`` (a close's window is read when models
compile), so a process that runs dbt on a new store does not parse the project again for
it (4.4 s; docs/performance.md). A change to a project file parses it again.

Across processes, the code dbt compiles from the project's Jinja is kept in the store
(billhouse/jinja_code_cache.py), and a parse that finds the project unchanged leaves the
store's manifest.json as it is (manifest_key).
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billhouse.errors import BillhouseError
from billhouse.jinja_code_cache import code_cache, precompile_templates
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


def dbt_environment(settings: Settings) -> dict[str, str]:
    """The environment variables profiles.yml reads to reach this store's warehouse."""
    env = {
        "BILLHOUSE_CHDB_PATH": str(settings.chdb_path),
        "BILLHOUSE_TARGET": settings.warehouse_target,
    }
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
    if "DBT_SEND_ANONYMOUS_USAGE_STATS" not in os.environ:
        env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


# The settings of one close run (macro close_setting), passed as environment variables
# rather than --vars: dbt re-parses the whole project when --vars change (each close's
# window does); the macro reads the environment only when models compile, so a new
# window re-parses nothing.
CLOSE_SETTINGS = {
    name: "BILLHOUSE_" + name.upper()
    for name in ("as_of", "close_from", "close_timezone", "finance_as_of", "build_every_model",
                 "read_event_day_totals")
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


@contextmanager
def patched_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` while the block runs, then put back what was there.
    An empty value removes the variable (a close setting not given: the dbt var applies)."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def store_lock_of(settings: Settings) -> AbstractContextManager[None]:
    """The embedded store's lock while dbt runs on it (nothing for PostgreSQL)."""
    if settings.warehouse_target == "postgres":
        return nullcontext()
    return store_lock(settings.data_dir)


# one dbt invocation at a time in this process (dbt keeps its state in globals)
_DBT_INVOCATION = threading.Lock()

# What dbt reads when it parses the project (dbt_project.yml's paths and its own files).
PARSED_PATHS = ("dbt_project.yml", "profiles.yml", "selectors.yml", "models", "macros", "seeds", "tests/dbt")

# dbt commands that work on the parsed project; the others (debug, deps, clean, init) do not
MANIFEST_COMMANDS = frozenset(
    {"build", "run", "test", "seed", "snapshot", "compile", "show", "ls", "list", "run-operation", "docs", "source",
     "retry", "clone"}
)

# dbt commands that run nodes: after each, dbt writes manifest.json again (0.4-0.5 s at
# every close), the manifest the store's parse wrote already; run_dbt writes their
# run_results.json itself instead
NODE_COMMANDS = frozenset({"build", "run", "test", "seed"})

# beside manifest.json: the parsed-project key (parsed_project_key) it was written for.
# A close's parse in a new process finds nothing changed and skips rewriting manifest.json
# (0.15-0.2 s at every close; the Dagster code location reads it).
MANIFEST_KEY_FILE = "manifest.key.json"
DBT_VERSION = importlib.metadata.version("dbt-core")

# the parsed project per (project files, warehouse type, warehouse database, --vars)
_parsed_projects: dict[tuple[str, ...], Any] = {}


def forget_parsed_projects() -> None:
    """Drop the parsed projects and dbt's compiled macros kept in memory: the next
    invocation loads the project as a new process does (from the store's partial-parse
    file, or by parsing it), and its macros from the store's code cache."""
    from dbt_common.clients.jinja import template_cache

    _parsed_projects.clear()
    template_cache.clear()


def project_fingerprint(project_dir: Path = PROJECT_DIR) -> str:
    """A digest of the name, size and modification time of every file dbt parses."""
    digest = hashlib.sha256()
    for relative in PARSED_PATHS:
        root = project_dir / relative
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(project_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def manifest_key(settings: Settings) -> tuple[str, ...] | None:
    """The parsed-project key of the store's manifest.json, as recorded when it was written
    (None when it was not, or by a dbt run outside run_dbt)."""
    try:
        recorded = json.loads((settings.dbt_target_dir / MANIFEST_KEY_FILE).read_text())
        written = _file_version(settings.dbt_target_dir / "manifest.json")
    except (OSError, ValueError):
        return None
    if recorded.get("dbt") != DBT_VERSION or recorded.get("manifest") != written:
        return None  # another dbt wrote manifest.json since
    return tuple(recorded.get("key") or ()) or None


def _file_version(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _project_parsed(settings: Settings, key: tuple[str, ...], manifest: Any, manifest_written: bool) -> None:
    """Keep the parsed project for the process, record which project manifest.json holds,
    and compile the project's templates into the store's code cache, once per project."""
    _parsed_projects[key] = manifest
    # Python's collector traverses every live object at each full collection: the parsed
    # project is most of them and lives as long as the process, so set it (and whatever
    # else is alive now) apart: a close's build then spends 0.05 s instead of 0.2 s in
    # full collections (docs/performance.md, stop 25)
    gc.freeze()
    manifest_path = settings.dbt_target_dir / "manifest.json"
    if manifest_written and manifest_path.exists():
        record = {"dbt": DBT_VERSION, "key": key, "manifest": _file_version(manifest_path)}
        (settings.dbt_target_dir / MANIFEST_KEY_FILE).write_text(json.dumps(record))
    precompile_templates(manifest, settings.dbt_code_cache_dir, json.dumps(key))


def dbt_command(args: list[str]) -> str | None:
    """The dbt subcommand among ``args`` (global flags such as ``--debug`` may come first)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def parsed_project_key(environment: Mapping[str, str], variables: Mapping[str, Any]) -> tuple[str, ...]:
    """What a parsed project depends on besides the project's files, from the store's
    ``dbt_environment``: the warehouse type (its adapter's macros, the seeds' column
    types) and the warehouse database the nodes are named in (PostgreSQL); and the
    ``--vars``. Not the store's path: every embedded store names its relations alike."""
    return (
        project_fingerprint(),
        environment["BILLHOUSE_TARGET"],
        environment.get("BILLHOUSE_PG_DATABASE", ""),
        json.dumps(variables, sort_keys=True),
    )


def run_dbt(
    settings: Settings,
    args: list[str],
    variables: dict[str, Any] | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> DbtResult:
    """Run ``dbt <args>`` on this project; raise DbtRunError with the failures on error.
    The close settings among ``variables`` go to dbt as environment variables, the rest
    as ``--vars``. The result's output holds the messages dbt would have printed (its
    debug messages too with ``--debug``); dbt prints nothing itself. ``on_event`` receives
    every event dbt fires (a protobuf ``EventMsg``), from dbt's threads."""
    from dbt.cli.main import dbtRunner

    settings_environment, variables = split_variables(variables)
    command = [
        *args,
        "--project-dir", str(PROJECT_DIR),
        "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(settings.dbt_target_dir),
        "--log-path", str(settings.dbt_log_dir),
    ]
    if variables:
        command += ["--vars", json.dumps(variables)]
    printed_levels = {"info", "warn", "error"} | ({"debug"} if "--debug" in args else set())
    lines: list[str] = []

    def keep_message(event: Any) -> None:
        if event.info.level in printed_levels:
            lines.append(event.info.msg)

    environment = dbt_environment(settings)
    with (
        _DBT_INVOCATION,
        store_lock_of(settings),
        patched_environment({**environment, **settings_environment}),
        code_cache(settings.dbt_code_cache_dir),
    ):
        # nothing on the console (the messages reach the callback); the log file as before
        callbacks = [keep_message, *([on_event] if on_event else [])]
        quiet = ["--log-level", "none", "--log-level-file", "debug"]
        key = parsed_project_key(environment, variables)
        subcommand = dbt_command(args)
        if subcommand in MANIFEST_COMMANDS and key not in _parsed_projects:
            # parse once (it writes the store's partial-parse file, and manifest.json
            # unless the one in the target is this project's already)
            parse_command = ["parse", *command[len(args):]]
            unchanged = ["--no-write-json"] if manifest_key(settings) == key else []
            parsed = dbtRunner(callbacks=callbacks).invoke([*parse_command, *quiet, *unchanged])
            if not parsed.success:
                raise DbtRunError(parse_command, "\n".join(lines) + f"\nException: {parsed.exception}")
            _project_parsed(settings, key, parsed.result, manifest_written=not unchanged)
        manifest = _parsed_projects.get(key) if subcommand in MANIFEST_COMMANDS else None
        manifest_written = (settings.dbt_target_dir / "manifest.json").exists()
        artifacts = ["--no-write-json"] if subcommand in NODE_COMMANDS and manifest_written else []
        outcome = dbtRunner(manifest=manifest, callbacks=callbacks).invoke([*command, *quiet, *artifacts])
        if artifacts and hasattr(outcome.result, "write"):
            outcome.result.write(str(settings.dbt_target_dir / "run_results.json"))
        if subcommand == "parse" and outcome.success:
            _project_parsed(settings, key, outcome.result, manifest_written="--no-write-json" not in args)
    output = "\n".join(lines)
    # an error dbt raised without reporting it as a message (a bad --vars, say); the
    # others it has reported already
    if outcome.exception is not None and str(outcome.exception) not in output:
        output += f"\nException: {outcome.exception}"
    if not outcome.success:
        raise DbtRunError(command, output)
    return DbtResult(command, output)
