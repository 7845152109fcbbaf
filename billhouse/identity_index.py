"""Sorted runs of 64-bit identity hashes on disk: which hashes were seen, by binary search.

The store's event identities are kept here so that a close can tell which of its new
events' identities were stored before without a pass over every stored event
(billhouse/identity_sync.py). A directory holds:

- ``run-<n>.npy``: a sorted array of ``uint64`` hashes each (numpy's own format, read
  memory-mapped, so only the pages a search touches are read);
- ``state.json``: the runs in use, and what they cover (``covers``: whatever the caller
  records there, for identity_sync the events table and its last indexed insert block).

A run is written whole to a temporary file, flushed to disk and renamed; ``state.json``
the same way, last. A crash therefore leaves the previous state in force, and at most a
run file no state names, which the next save removes.

Runs of similar size are merged (a merge of the newest two while the older is at most
twice the newer), so a store of n hashes added in batches of b keeps about log2(n / b)
runs and each hash is rewritten about that many times. A hash may be in more than one
run (the caller adds each batch whole); ``contains`` asks every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HashArray = npt.NDArray[np.uint64]

STATE_FILE = "state.json"


@dataclass
class IdentityIndex:
    directory: Path
    covers: dict[str, Any] | None = None
    _runs: list[str] = field(default_factory=list)
    _next_run: int = 0

    @classmethod
    def open(cls, directory: Path) -> IdentityIndex:
        """The index saved in ``directory``; an empty one (``covers`` None) when there is none."""
        state_path = directory / STATE_FILE
        if not state_path.exists():
            return cls(directory)
        state = json.loads(state_path.read_text())
        return cls(directory, state["covers"], list(state["runs"]), int(state["next_run"]))

    @property
    def run_count(self) -> int:
        return len(self._runs)

    def contains(self, hashes: HashArray) -> npt.NDArray[np.bool_]:
        """For each hash, whether a run holds it (``hashes`` sorted: the search then reads
        each run's pages in order)."""
        found = np.zeros(len(hashes), dtype=bool)
        for name in self._runs:
            run = self._run(name)
            if len(run) == 0 or len(hashes) == 0:
                continue
            positions = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            found |= run[positions] == hashes
        return found

    def save(self, added: HashArray, covers: dict[str, Any] | None) -> None:
        """Add a sorted batch of hashes and record what the index now covers, durably
        (None: nothing yet, as while a caller adds batches that belong together)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        runs = [*self._runs]
        arrays: dict[str, HashArray] = {}
        if len(added):
            runs.append(self._write_run(added))
            arrays[runs[-1]] = added
        while len(runs) >= 2 and len(self._load(runs[-2], arrays)) <= 2 * len(self._load(runs[-1], arrays)):
            newer = self._load(runs.pop(), arrays)
            older = self._load(runs.pop(), arrays)
            merged = _merge(older, newer)
            runs.append(self._write_run(merged))
            arrays[runs[-1]] = merged
        self._write_json(self.directory / STATE_FILE, {"covers": covers, "runs": runs, "next_run": self._next_run})
        self._runs, self.covers = runs, covers
        for path in self.directory.glob("run-*.npy"):
            if path.name not in runs:
                path.unlink()

    def clear(self) -> None:
        """Forget every hash and what they covered (the caller then adds the store's anew)."""
        self._runs = []
        self.covers = None

    def _run(self, name: str) -> HashArray:
        return np.load(self.directory / name, mmap_mode="r")

    def _load(self, name: str, arrays: dict[str, HashArray]) -> HashArray:
        if name not in arrays:
            arrays[name] = np.asarray(self._run(name))
        return arrays[name]

    def _write_run(self, hashes: HashArray) -> str:
        name = f"run-{self._next_run}.npy"
        self._next_run += 1
        temporary = self.directory / (name + ".tmp")
        with open(temporary, "wb") as file:
            np.save(file, np.ascontiguousarray(hashes, dtype=np.uint64))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.directory / name)
        return name

    def _write_json(self, path: Path, content: dict[str, Any]) -> None:
        temporary = path.with_suffix(".tmp")
        with open(temporary, "w") as file:
            json.dump(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _merge(first: HashArray, second: HashArray) -> HashArray:
    """Two sorted runs as one, in linear passes (a sort of the two together is slower)."""
    if len(first) < len(second):
        first, second = second, first
    positions = np.searchsorted(first, second) + np.arange(len(second))
    merged = np.empty(len(first) + len(second), dtype=np.uint64)
    from_first = np.ones(len(merged), dtype=bool)
    from_first[positions] = False
    merged[positions] = second
    merged[from_first] = first
    return merged
