"""The benchmark's events: deterministic, Lago-shaped, every identity distinct.

The driver sends them as batch bodies; the bare-insert comparison validates the very
same bodies and inserts their rows straight into a chDB store.
"""

from __future__ import annotations

import msgspec

SUBSCRIPTIONS = 1000
START_SECONDS = 1_793_491_200  # 2026-11-01T00:00:00Z


def events(count: int, run_id: str, start: int = 0) -> list[dict]:
    return [
        {
            "transaction_id": f"{run_id}-tx-{i:010d}",
            "external_subscription_id": f"sub_{i % SUBSCRIPTIONS:05d}",
            "code": "api_calls" if i % 4 else "tokens",
            "timestamp": START_SECONDS + i % 2_000_000,
            "properties": {"tokens": i % 997, "region": "eu-west" if i % 2 else "us-east"},
        }
        for i in range(start, start + count)
    ]


def batch_bodies(batches: int, batch_size: int, run_id: str) -> list[bytes]:
    encode = msgspec.json.encode
    return [
        encode({"events": events(batch_size, run_id, start=b * batch_size)})
        for b in range(batches)
    ]
