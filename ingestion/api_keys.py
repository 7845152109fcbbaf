"""Bearer API keys of the events API: created and revoked in the ledger, stored hashed.

A key is ``bh_`` + 43 URL-safe characters (32 random bytes), printed once by
``billhouse api-key create``. The ledger keeps its SHA-256 only (migration 0002); the
key is long and random, so a fast hash is safe and keeps verification cheap.

The server asks the ledger once per key and caches the answer for ``cache_seconds``
(default 5 s): a revoked key stops working within that time, a new key works at once
(unknown keys are looked up again on every request, bounded by the negative cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from billhouse.ledger_connection import connect
from billhouse.settings import Settings
from ingestion.errors import ApiKeyError
from invoicing.migrations import migrate

KEY_PREFIX = "bh_"
_SHOWN_PREFIX_LENGTH = 10


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedApiKey:
    record: ApiKey
    secret: str  # shown once; only its hash is stored


def hash_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_api_key(conn: psycopg.Connection, name: str) -> CreatedApiKey:
    if not name.strip():
        raise ApiKeyError("api key name: must be a non-empty string")
    migrate(conn)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO api_keys (name, key_prefix, key_sha256) VALUES (%s, %s, %s)"
        " RETURNING id::text, name, key_prefix, created_at, revoked_at",
        (name, secret[:_SHOWN_PREFIX_LENGTH], hash_key(secret)),
    ).fetchone()
    assert row is not None
    return CreatedApiKey(ApiKey(*row), secret)


def revoke_api_key(conn: psycopg.Connection, id_or_prefix: str) -> ApiKey:
    """Revoke the key whose id or shown prefix is given; refuse an ambiguous prefix."""
    migrate(conn)
    matches = conn.execute(
        "SELECT id::text, name, key_prefix, created_at, revoked_at FROM api_keys"
        " WHERE id::text = %s OR key_prefix = %s",
        (id_or_prefix, id_or_prefix),
    ).fetchall()
    if not matches:
        raise ApiKeyError(f"api key {id_or_prefix!r}: no such key (give its id or prefix)")
    if len(matches) > 1:
        raise ApiKeyError(f"api key {id_or_prefix!r}: {len(matches)} keys match; give the id")
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s"
        " RETURNING id::text, name, key_prefix, created_at, revoked_at",
        (matches[0][0],),
    ).fetchone()
    assert row is not None
    return ApiKey(*row)


def list_api_keys(conn: psycopg.Connection) -> list[ApiKey]:
    migrate(conn)
    rows = conn.execute(
        "SELECT id::text, name, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at"
    ).fetchall()
    return [ApiKey(*row) for row in rows]


class KeyVerifier:
    """Checks bearer keys against the ledger, with a short cache (see module doc)."""

    def __init__(self, settings: Settings, cache_seconds: float = 5.0, max_cached: int = 10_000) -> None:
        self.settings = settings
        self.cache_seconds = cache_seconds
        self.max_cached = max_cached
        self._cache: dict[bytes, tuple[bool, float]] = {}
        self._conn: psycopg.Connection | None = None
        self._db_lock = threading.Lock()

    def prepare(self) -> None:
        """Connect and migrate once at startup, so the first request is not slow."""
        with self._db_lock:
            self._connection()

    def cached(self, digest: bytes) -> bool | None:
        entry = self._cache.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    async def verify(self, secret: str) -> bool:
        digest = hash_key(secret)
        known = self.cached(digest)
        if known is not None:
            return known
        valid = await asyncio.to_thread(self._lookup, digest)
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[digest] = (valid, time.monotonic() + self.cache_seconds)
        return valid

    def close(self) -> None:
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _lookup(self, digest: bytes) -> bool:
        with self._db_lock:
            for attempt in (1, 2):
                try:
                    row = self._connection().execute(
                        "SELECT 1 FROM api_keys WHERE key_sha256 = %s AND revoked_at IS NULL", (digest,)
                    ).fetchone()
                    return row is not None
                except psycopg.OperationalError:
                    self._conn = None  # reconnect once (ledger restarted)
                    if attempt == 2:
                        raise
        return False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.settings)
            migrate(self._conn)
        return self._conn
