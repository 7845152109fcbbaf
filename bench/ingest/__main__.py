"""bench/ingest: durable ingestion rate of the events API vs a bare insert into chDB.

    .venv/bin/python -m bench.ingest [--batches 20000] [--connections 32] [--runs 3]

Per run, in a fresh data directory (loopback only, bounded):
1. create an API key in the embedded ledger and start ``billhouse serve`` (a child
   process on the embedded store's landing directory);
2. a separate driver process (bench/ingest/driver.py) posts ``--batches`` batches of
   100 events over ``--connections`` keep-alive connections; every 200 is fsync'd;
3. the same events, validated by the same decoder, are inserted straight into a fresh
   chDB store in one column-oriented insert (the "bare insert"), timed alone;
4. the landed events are loaded by the close's loader into a chDB store, timed.
Prints every run and the medians, with the machine (CPU count and model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest.events import batch_bodies
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.raw_tables import EVENTS
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.api_keys import create_api_key
from ingestion.config import landing_dir
from ingestion.decoding import decode_batch
from ingestion.loader import load_landed_events
from ingestion.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bare_insert_rate(data_dir: Path, bodies: list[bytes]) -> float:
    rows = [row for body in bodies for row in decode_batch(body, 100)]
    columns = [list(c) for c in zip(*rows)]
    ingested = [1_800_000_000_000_000 + i for i in range(len(rows))]
    settings = Settings(data_dir=data_dir)
    with open_warehouse(settings) as warehouse:
        warehouse.client.insert(  # warm-up: first insert imports and sets up the client
            f"{warehouse.schema}.{EVENTS.name}", [[c[0]] for c in columns] + [[ingested[0]]],
            column_names=EVENTS.column_names, column_oriented=True)
        started = time.perf_counter()
        warehouse.client.insert(f"{warehouse.schema}.{EVENTS.name}", columns + [ingested],
                                column_names=EVENTS.column_names, column_oriented=True)
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def one_run(run: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data_dir = Path(tmp)
        settings = Settings(data_dir=data_dir)
        try:
            with ledger(settings) as conn:
                key = create_api_key(conn, "bench").secret
            with ServerProcess(data_dir) as server:
                driver = subprocess.run(
                    [sys.executable, "-m", "bench.ingest.driver", "--port", str(server.port), "--key", key,
                     "--batches", str(args.batches), "--connections", str(args.connections), "--run-id", f"r{run}"],
                    cwd=REPO, capture_output=True, text=True, check=True,
                )
            result = json.loads(driver.stdout.strip().splitlines()[-1])
            assert result["statuses"] == {"200": args.batches}, result["statuses"]
            result["bare_insert_events_per_second"] = bare_insert_rate(
                data_dir / "bare", batch_bodies(args.batches, 100, f"r{run}"))
            with open_warehouse(Settings(data_dir=data_dir / "loaded")) as warehouse:
                started = time.perf_counter()
                report = load_landed_events(warehouse, landing_dir(settings))
                result["close_load_events_per_second"] = report.rows / (time.perf_counter() - started)
            result["ratio_to_bare_insert"] = result["events_per_second"] / result["bare_insert_events_per_second"]
        finally:
            stop_ledger(settings)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20_000, help="batches of 100 per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}, {platform.system()}")
    print(f"load: {args.runs} runs x {args.batches} batches x 100 events, {args.connections} keep-alive connections")
    results = []
    for run in range(args.runs):
        result = one_run(run, args)
        results.append(result)
        print(
            f"run {run + 1}: {result['events_per_second']:,.0f} events/s durable"
            f" | p50 {result['p50_ms']:.1f} ms p99 {result['p99_ms']:.1f} ms per batch"
            f" | bare insert {result['bare_insert_events_per_second']:,.0f} events/s"
            f" | ratio {result['ratio_to_bare_insert']:.2f}"
            f" | close load {result['close_load_events_per_second']:,.0f} events/s",
            flush=True,
        )

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    print(
        f"median: {median('events_per_second'):,.0f} events/s durable, p50 {median('p50_ms'):.1f} ms,"
        f" p99 {median('p99_ms'):.1f} ms, bare insert {median('bare_insert_events_per_second'):,.0f} events/s,"
        f" ratio {median('ratio_to_bare_insert'):.2f}, close load {median('close_load_events_per_second'):,.0f} events/s"
    )


if __name__ == "__main__":
    main()
