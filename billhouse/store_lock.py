"""One process at a time in the embedded store, by waiting rather than failing.

chDB refuses a second process on a data directory: the second one fails on open. Every
billhouse step that uses the store — a ``Warehouse`` (``open_warehouse``), a dbt run of
the ``chdb`` target (``run_dbt``, the Dagster dbt asset) — holds an exclusive lock on
``<data dir>/store.lock`` while it does, so a step that finds the store taken waits for
the holder's step to end (steps are bounded: a query, a load, one dbt build) instead of
failing. A caller that must not wait (the close-clock sensor: its tick is a few seconds
at most) asks with ``wait=False`` and gets ``StoreBusyError``.

The lock is re-entrant within a thread (a step may open a Warehouse inside another
step's lock) and exclusive across threads and processes (``flock`` on its own open file).
Processes that do not take it (a dbt run by hand) still meet chDB's own refusal.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from billhouse.errors import BillhouseError

LOCK_FILE = "store.lock"

_held = threading.local()


class StoreBusyError(BillhouseError):
    def __init__(self, lock_path: Path) -> None:
        self.lock_path = lock_path
        super().__init__(f"the store is in use by another billhouse step ({lock_path} is locked)")


@contextmanager
def store_lock(data_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the store of ``data_dir`` for the block; wait for it, or raise
    StoreBusyError at once when ``wait`` is False."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = (data_dir / LOCK_FILE).resolve()
    depths: dict[Path, int] = _held.__dict__.setdefault("depths", {})
    if depths.get(lock_path):
        depths[lock_path] += 1
        try:
            yield
        finally:
            depths[lock_path] -= 1
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreBusyError(lock_path) from exc
        depths[lock_path] = 1
        try:
            yield
        finally:
            depths.pop(lock_path, None)
    finally:
        os.close(fd)  # releases the flock
