"""Prometheus counters and the flush-latency histogram of the ingestion API.

Rendered as Prometheus text exposition format (version 0.0.4) at ``GET /metrics``.
Counters are plain integers touched only from the event loop thread, except the
histogram, which the writer thread observes under its own lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, seconds: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    self.counts[i] += 1
            self.total += seconds
            self.count += 1

    def render(self, name: str) -> list[str]:
        with self._lock:
            lines = [f'{name}_bucket{{le="{bound}"}} {n}' for bound, n in zip(self.buckets, self.counts)]
            lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
            lines.append(f"{name}_sum {self.total:.6f}")
            lines.append(f"{name}_count {self.count}")
        return lines


@dataclass
class IngestMetrics:
    events_accepted: int = 0  # stored and acknowledged, first copies only
    events_duplicate: int = 0  # acknowledged copies of an already accepted identity
    events_rejected: int = 0  # events in refused requests (422), counted per event
    requests_rejected: dict[int, int] = field(default_factory=dict)  # by HTTP status
    flushes: int = 0
    flush_events: int = 0
    flush_seconds: Histogram = field(default_factory=lambda: Histogram(FLUSH_BUCKETS))

    def reject(self, status: int, events: int = 0) -> None:
        self.requests_rejected[status] = self.requests_rejected.get(status, 0) + 1
        self.events_rejected += events

    def render(self) -> bytes:
        lines = [
            "# HELP billhouse_ingest_events_accepted_total Events acknowledged durably, first copy of each identity.",
            "# TYPE billhouse_ingest_events_accepted_total counter",
            f"billhouse_ingest_events_accepted_total {self.events_accepted}",
            "# HELP billhouse_ingest_events_duplicate_total Events acknowledged whose identity was already accepted.",
            "# TYPE billhouse_ingest_events_duplicate_total counter",
            f"billhouse_ingest_events_duplicate_total {self.events_duplicate}",
            "# HELP billhouse_ingest_events_rejected_total Events in requests refused with 422.",
            "# TYPE billhouse_ingest_events_rejected_total counter",
            f"billhouse_ingest_events_rejected_total {self.events_rejected}",
            "# HELP billhouse_ingest_requests_rejected_total Requests refused, by HTTP status.",
            "# TYPE billhouse_ingest_requests_rejected_total counter",
        ]
        for status in sorted(self.requests_rejected):
            lines.append(f'billhouse_ingest_requests_rejected_total{{status="{status}"}} {self.requests_rejected[status]}')
        lines += [
            "# HELP billhouse_ingest_flushes_total Group commits (one write + fdatasync each).",
            "# TYPE billhouse_ingest_flushes_total counter",
            f"billhouse_ingest_flushes_total {self.flushes}",
            "# HELP billhouse_ingest_flush_seconds Time of one group commit: write and fdatasync.",
            "# TYPE billhouse_ingest_flush_seconds histogram",
            *self.flush_seconds.render("billhouse_ingest_flush_seconds"),
        ]
        return ("\n".join(lines) + "\n").encode()
