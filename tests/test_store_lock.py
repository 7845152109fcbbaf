"""One billhouse step at a time in the embedded store: the others wait (or, asked not
to, are told at once) instead of failing on chDB's one-process rule."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from billhouse.settings import Settings
from billhouse.store_lock import StoreBusyError, store_lock
from billhouse.warehouse import open_warehouse

HOLDER = """
import sys, time
from pathlib import Path
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
with open_warehouse(Settings(data_dir=Path(sys.argv[1]))) as warehouse:
    warehouse.query("select 1")
    Path(sys.argv[2]).write_text("holding")
    time.sleep(float(sys.argv[3]))
"""


def _hold_store_in_another_process(data_dir: Path, seconds: float) -> subprocess.Popen:
    ready = data_dir / "holder-ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), str(ready), str(seconds)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None, "the holder process died"
        assert time.monotonic() < deadline, "the holder never opened the store"
        time.sleep(0.05)
    return holder


def test_a_step_waits_for_the_process_holding_the_store_then_opens_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with open_warehouse(settings):
        pass  # the store exists
    holder = _hold_store_in_another_process(tmp_path, seconds=2.0)
    try:
        with pytest.raises(StoreBusyError, match="store.lock"):
            with open_warehouse(settings, wait=False):
                pass
        started = time.monotonic()
        with open_warehouse(settings) as warehouse:  # waits instead of failing on chDB's lock
            waited = time.monotonic() - started
            assert warehouse.query("select 1 as one") == [{"one": 1}]
        assert waited > 0.5
    finally:
        assert holder.wait(timeout=60) == 0


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path: Path) -> None:
    order: list[str] = []
    with store_lock(tmp_path):
        with store_lock(tmp_path):  # a step inside a step: no deadlock
            order.append("nested")

        def other_step() -> None:
            with store_lock(tmp_path):
                order.append("other thread")

        thread = threading.Thread(target=other_step)
        thread.start()
        time.sleep(0.3)
        order.append("first step ends")
    thread.join(timeout=10)
    assert order == ["nested", "first step ends", "other thread"]
