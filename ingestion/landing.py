"""The landing writer: group-committed, fsync'd appends of accepted requests.

The event loop hands each accepted request to ``LandingWriter.submit`` as one frame and
awaits the returned future; a single writer thread takes every frame queued since its
last flush, appends them with one ``write`` and makes them durable with one
``fdatasync`` (many requests, one fsync), then resolves their futures. The API answers
200 only after that, so an acknowledged event survives ``kill -9`` (and power loss, on
storage that honours fsync).

A new process never appends to an old segment: it starts a fresh one, created and made
durable in its directory (file and directory fsync) before its first frame is
acknowledged. Segments rotate at ``segment_max_bytes``. A failed write or fsync breaks
the writer for good (after a failed fsync the page cache state is unknown): every
later request gets 503 and ``/health`` reports it; restart the process.

``writer.lock`` (flock) keeps a second server off the same landing directory.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ingestion.errors import LandingError
from ingestion.metrics import IngestMetrics
from ingestion.segments import fsync_directory, list_segments, read_frames, segment_name

DEFAULT_SEGMENT_MAX_BYTES = 64 * 1024 * 1024

_Pending = tuple[int, bytes, int, asyncio.Future]  # ingested_at µs, frame, row count, future


class LandingWriter:
    def __init__(
        self,
        landing_dir: Path,
        metrics: IngestMetrics,
        segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES,
    ) -> None:
        self.landing_dir = landing_dir
        self.metrics = metrics
        self.segment_max_bytes = segment_max_bytes
        self.broken: str | None = None
        self._last_ingested_at_us = 0
        self._lock_fd: int | None = None
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._segment_size = 0

    def open(self, on_row: Callable[[str, str], object]) -> int:
        """Lock the directory, replay every landed row's identity into ``on_row``.

        Returns the number of rows replayed. Must be called before ``start``.
        """
        self.landing_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.landing_dir / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise LandingError(f"another ingestion server writes to {self.landing_dir}") from exc
        self._lock_fd = fd
        replayed = 0
        for path in list_segments(self.landing_dir):
            for frame in read_frames(path):
                self._last_ingested_at_us = max(self._last_ingested_at_us, frame.ingested_at_us)
                for row in frame.rows:
                    on_row(row[1], row[0])
                replayed += len(frame.rows)
        return replayed

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="landing-writer", daemon=True)
        self._thread.start()

    def next_ingested_at_us(self) -> int:
        """A strictly increasing instant for the next frame (event loop thread only)."""
        now = time.time_ns() // 1000
        self._last_ingested_at_us = now if now > self._last_ingested_at_us else self._last_ingested_at_us + 1
        return self._last_ingested_at_us

    def submit(self, ingested_at_us: int, frame: bytes, rows: int) -> asyncio.Future:
        """Queue a frame; the future resolves once it is on disk (or fails)."""
        assert self._loop is not None, "start() the writer first"
        future = self._loop.create_future()
        if self.broken:
            future.set_exception(LandingError(self.broken))
            return future
        with self._cond:
            self._pending.append((ingested_at_us, frame, rows, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- writer thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                batch, self._pending = self._pending, []
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                if self.broken:
                    raise LandingError(self.broken)
                self._append(batch)
            except OSError as exc:
                self.broken = f"landing write failed, restart the server: {exc}"
                error = LandingError(self.broken)
            except LandingError as exc:
                error = exc
            if error is None:
                self.metrics.flush_seconds.observe(time.perf_counter() - started)
                self.metrics.flushes += 1
                self.metrics.flush_events += sum(item[2] for item in batch)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(_resolve, [item[3] for item in batch], error)
            except RuntimeError:  # loop closed at shutdown
                return

    def _append(self, batch: list[_Pending]) -> None:
        data = b"".join(item[1] for item in batch)
        if self._fd is None or (self._segment_size and self._segment_size + len(data) > self.segment_max_bytes):
            self._rotate(batch[0][0])
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fdatasync(self._fd)
        self._segment_size += len(data)

    def _rotate(self, first_ingested_at_us: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.landing_dir / segment_name(first_ingested_at_us)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.fsync(self._fd)
        fsync_directory(self.landing_dir)
        self._segment_size = 0


def _resolve(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
