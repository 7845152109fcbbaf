"""Load landed events into ``billhouse_raw.events`` exactly once (run by the close).

The loader walks the segments in order from the byte offset it reached last time
(``landing/loaded.json``) and inserts whole frames in *chunks* (at most
``CHUNK_MAX_ROWS`` rows and ``CHUNK_MAX_BYTES`` payload bytes). Each chunk is one
insert of one block, which ClickHouse commits as one part: all of it or none of it.

Per chunk, in this order:
1. record the intent — segment, byte range and a *probe* (the first row's
   subscription, transaction id and ``ingested_at``) — in the state file (fsync'd);
2. insert the chunk;
3. record the new offset and clear the intent (fsync'd).

A crash between 1 and 3 leaves the intent behind; the next run asks the warehouse for
the probe row. ``ingested_at`` is strictly increasing per landing directory, so that
row can only have come from this chunk: found → the chunk is in, advance the offset;
not found → insert it again. So a crash neither loses nor double-loads a frame.

Frames still being written (short or failing their CRC) are left for the next run;
segments are never deleted (they also back the API's duplicate index). The state file
belongs with the warehouse: start a fresh store, delete ``loaded.json`` too.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from billhouse.raw_tables import EVENTS
from ingestion.errors import LoadError
from ingestion.segments import HEADER, Frame, fsync_directory, list_segments, read_frames

STATE_FILE = "loaded.json"
CHUNK_MAX_ROWS = 500_000
CHUNK_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class LoadReport:
    rows: int = 0
    frames: int = 0
    chunks: int = 0
    recovered: list[str] = field(default_factory=list)  # what a pending intent turned out to be


@dataclass(frozen=True)
class Chunk:
    segment: str
    start: int
    end: int
    frames: list[Frame]

    @property
    def rows(self) -> int:
        return sum(len(f.rows) for f in self.frames)

    def probe(self) -> list[Any]:
        first = self.frames[0]
        tx, sub = first.rows[0][0], first.rows[0][1]
        return [sub, tx, first.ingested_at_us]


class LandedEventsLoader:
    """One loading run over a landing directory into one warehouse."""

    def __init__(self, warehouse: Any, landing_dir: Path) -> None:
        self.warehouse = warehouse
        self.landing_dir = landing_dir
        self.state_path = landing_dir / STATE_FILE
        self.offsets: dict[str, int] = {}
        self.pending: dict[str, Any] | None = None
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            self.offsets = {name: int(offset) for name, offset in state.get("offsets", {}).items()}
            self.pending = state.get("pending")

    def load(self) -> LoadReport:
        report = LoadReport()
        if self.pending is not None:
            report.recovered.append(self.recover())
        for chunk in self.chunks():
            self.begin(chunk)
            self.insert(chunk)
            self.commit(chunk)
            report.rows += chunk.rows
            report.frames += len(chunk.frames)
            report.chunks += 1
        return report

    def recover(self) -> str:
        """Settle the intent a crashed run left: was its chunk inserted or not?"""
        assert self.pending is not None
        sub, tx, ingested_at_us = self.pending["probe"]
        found = int(
            self.warehouse.client.command(
                f"SELECT count() FROM {self.warehouse.schema}.{EVENTS.name}"
                " WHERE external_subscription_id = {sub:String} AND transaction_id = {tx:String}"
                " AND ingested_at = fromUnixTimestamp64Micro({at:Int64}, 'UTC')",
                parameters={"sub": sub, "tx": tx, "at": ingested_at_us},
            )
        )
        segment, end = self.pending["segment"], int(self.pending["end"])
        if found:
            self.offsets[segment] = end
            outcome = f"{segment}@{self.pending['start']}: was loaded, offset advanced"
        else:
            outcome = f"{segment}@{self.pending['start']}: was not loaded, loading again"
        self.pending = None
        self._write_state()
        return outcome

    def chunks(self) -> Iterator[Chunk]:
        for path in list_segments(self.landing_dir):
            start = self.offsets.get(path.name, 0)
            frames: list[Frame] = []
            rows = size = 0
            for frame in read_frames(path, start):
                frames.append(frame)
                rows += len(frame.rows)
                size += frame.end - frame.offset - HEADER.size
                if rows >= CHUNK_MAX_ROWS or size >= CHUNK_MAX_BYTES:
                    yield Chunk(path.name, frames[0].offset, frames[-1].end, frames)
                    frames, rows, size = [], 0, 0
            if frames:
                yield Chunk(path.name, frames[0].offset, frames[-1].end, frames)

    def begin(self, chunk: Chunk) -> None:
        self.pending = {"segment": chunk.segment, "start": chunk.start, "end": chunk.end, "probe": chunk.probe()}
        self._write_state()

    def insert(self, chunk: Chunk) -> None:
        columns: dict[str, list] = {name: [] for name in ("transaction_id", "external_subscription_id",
                                                         "code", "timestamp", "properties", "ingested_at")}
        for frame in chunk.frames:
            tx, sub, code, ts, props = zip(*frame.rows)
            columns["transaction_id"].extend(tx)
            columns["external_subscription_id"].extend(sub)
            columns["code"].extend(code)
            columns["timestamp"].extend(ts)  # Unix milliseconds: DateTime64(3) ticks
            columns["properties"].extend(props)
            columns["ingested_at"].extend([frame.ingested_at_us] * len(frame.rows))  # DateTime64(6) ticks
        names = EVENTS.column_names
        missing = [name for name in names if name not in columns]
        if missing:
            raise LoadError(f"billhouse_raw.events has columns the landing format lacks: {missing}")
        self.warehouse.client.insert(
            f"{self.warehouse.schema}.{EVENTS.name}",
            [columns[name] for name in names],
            column_names=names,
            column_oriented=True,
        )

    def commit(self, chunk: Chunk) -> None:
        self.offsets[chunk.segment] = chunk.end
        self.pending = None
        self._write_state()

    def _write_state(self) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        with open(temporary, "w") as file:
            json.dump({"offsets": self.offsets, "pending": self.pending}, file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.state_path)
        fsync_directory(self.landing_dir)


def load_landed_events(warehouse: Any, landing_dir: Path) -> LoadReport:
    """Load every complete landed frame not loaded yet; safe to run again at any time."""
    if not landing_dir.exists():
        return LoadReport()
    with _exclusive(landing_dir / "loader.lock"):
        return LandedEventsLoader(warehouse, landing_dir).load()


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
