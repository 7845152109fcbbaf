"""Load driver for bench/ingest: POST pre-built batches over keep-alive connections.

Run by ``bench/ingest/run.py`` in its own process (so the server's CPU is measured
apart from the client's). Loopback only. Prints one JSON line: events, seconds,
events/s, p50/p99 request latency, status counts.

    python bench/ingest/driver.py --port P --key KEY --batches N --connections C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from bench.ingest.events import batch_bodies


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending requests one after the other."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"content-length:")
        length = int(head[marker + 15 : head.find(b"\r\n", marker) if head.find(b"\r\n", marker) > 0 else None])
        if len(self.buffer) >= end + 4 + length:
            status = int(head[9:12])
            del self.buffer[: end + 4 + length]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    async def request(self, raw: bytes) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return await self.waiter


def _requests(port: int, key: str, bodies: list[bytes]) -> list[bytes]:
    head = (
        f"POST /api/v1/events/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    ).encode()
    return [head + f"Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies]


async def drive(port: int, requests: list[bytes], connections: int) -> dict:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)

    async def worker() -> None:
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        for raw in queue:  # the shared iterator bounds the whole run
            started = time.perf_counter_ns()
            status = await conn.request(raw)
            latencies.append(time.perf_counter_ns() - started)
            statuses[status] = statuses.get(status, 0) + 1
        assert conn.transport is not None
        conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": latencies[len(latencies) // 2] / 1e6,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e6,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--run-id", default="r")
    args = parser.parse_args()
    bodies = batch_bodies(args.batches, args.batch_size, args.run_id)
    warmup = batch_bodies(args.warmup, args.batch_size, args.run_id + "-warmup")
    uvloop.install()
    asyncio.run(drive(args.port, _requests(args.port, args.key, warmup), args.connections))
    result = asyncio.run(drive(args.port, _requests(args.port, args.key, bodies), args.connections))
    result["events"] = args.batches * args.batch_size
    result["events_per_second"] = result["events"] / result["seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
