"""Versioned ledger schema migrations.

Migrations are plain SQL files in ``invoicing/migrations/``, named
``NNNN_description.sql`` and applied in version order. ``migrate(conn)`` applies each
pending file in its own transaction and records it in ``schema_migrations`` with the
file's SHA-256, so an applied migration that was edited afterwards is refused (write a
new migration instead). Every transaction takes the same transaction-level advisory
lock first: concurrent or repeated calls are safe, and exactly one applies each file.

This is the only place the ledger's DDL runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.pq import TransactionStatus

from invoicing.errors import MigrationError, TransactionStateError

__all__ = ["Migration", "applied_versions", "discover_migrations", "migrate"]

# pg_advisory_xact_lock key: the bytes "bh-migr" as an integer.
_LOCK_KEY = int.from_bytes(b"bh-migr", "big")
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations() -> list[Migration]:
    """The migration files shipped with the package, in version order."""
    folder = resources.files("invoicing").joinpath("migrations")
    migrations: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file name {entry.name!r} is not NNNN_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise MigrationError(f"two migrations have version {version:04d}")
        migrations[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [migrations[v] for v in sorted(migrations)]


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations; return the versions this call applied."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise TransactionStateError("migrate() runs its own transactions; commit first")
    with conn.transaction():
        _lock(conn)
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
    applied: list[int] = []
    for migration in discover_migrations():
        with conn.transaction():
            _lock(conn)
            row = conn.execute(
                "SELECT checksum FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if row is not None:
                if row[0] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it was "
                        "applied; add a new migration instead"
                    )
                continue
            conn.execute(migration.sql.encode())  # no parameters: the file is sent as is
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied.append(migration.version)
    return applied


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty before the first migrate)."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
        return []
    return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def _lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
