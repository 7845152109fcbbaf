"""kill -9 the API mid-stream, restart it, close: acknowledged events are billed once.

Four clients send 50-event batches; the server is SIGKILLed once 25 batches are
acknowledged, with requests still in flight. After a restart the clients resend half
of the unacknowledged batches and three acknowledged ones (a client retrying), then a
close runs *while the API is still up* (it never opens the chDB store). Every event is
1 EUR, so each invoice must be 100 cents × the distinct events of its subscription:
- every acknowledged event is billed, exactly once;
- no event is billed twice, acknowledged or not (the loader lands each frame once,
  the models keep the first copy of a resent one);
- a second close loads nothing and bills nothing new.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from billhouse.catalog import parse_catalog
from billhouse.close import close, load_inputs
from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from billhouse.warehouse import open_warehouse
from ingestion.api_keys import create_api_key
from ingestion.config import landing_dir
from ingestion.loader import load_landed_events
from ingestion.process import ServerProcess

SUBSCRIPTIONS = ["sub_1", "sub_2", "sub_3"]
CATALOG = {
    "billable_metrics": [{"code": "api_calls", "name": "API calls", "aggregation_type": "count_agg"}],
    "plans": [{
        "code": "metered", "name": "Metered", "interval": "monthly", "amount_cents": 0, "amount_currency": "EUR",
        "charges": [{"billable_metric_code": "api_calls", "charge_model": "standard", "properties": {"amount": "1"}}],
    }],
    "customers": [{"external_id": f"cus_{i}", "name": f"Customer {i}", "currency": "EUR", "timezone": "UTC"}
                  for i in range(1, 4)],
    "subscriptions": [{"external_id": f"sub_{i}", "external_customer_id": f"cus_{i}", "plan_code": "metered",
                       "subscription_at": "2026-10-01T00:00:00Z"} for i in range(1, 4)],
}
BATCHES = 400
BATCH_SIZE = 50
OCTOBER_1 = 1790812800  # 2026-10-01T00:00:00Z


def batch(number: int) -> list[dict]:
    return [
        {"transaction_id": f"b{number}-e{i}", "external_subscription_id": SUBSCRIPTIONS[(number + i) % 3],
         "code": "api_calls", "timestamp": OCTOBER_1 + number * 60 + i}
        for i in range(BATCH_SIZE)
    ]


class Senders:
    """Clients sending batches until the server dies; they remember what was acknowledged."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.next_batch = 0
        self.acked: list[int] = []
        self.failed: list[int] = []  # sent, no acknowledgement
        self.lock = threading.Lock()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=10) as http:
            while True:
                with self.lock:
                    number = self.next_batch
                    if number >= BATCHES:
                        return
                    self.next_batch += 1
                try:
                    ok = http.post("/api/v1/events/batch", json={"events": batch(number)}).status_code == 200
                except httpx.TransportError:
                    ok = False
                with self.lock:
                    (self.acked if ok else self.failed).append(number)
                if not ok:
                    return


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("ingestion_crash")))
    yield settings
    stop_ledger(settings)


def test_kill_9_mid_stream_then_close_bills_every_acknowledged_event_exactly_once(settings: Settings) -> None:
    load_inputs(settings, parse_catalog(CATALOG, source="crash test"), [])
    with ledger(settings) as conn:
        key = create_api_key(conn, "crash test").secret
    server = ServerProcess(settings.data_dir)
    server.start()
    senders = Senders(server.url, key)
    threads = [threading.Thread(target=senders.run) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(senders.acked) < 25 and time.monotonic() < deadline:
        time.sleep(0.001)
    server.kill()
    for thread in threads:
        thread.join()
    acked, failed = set(senders.acked), set(senders.failed)
    assert len(acked) >= 25 and failed, "the kill must land mid-stream"

    server.start()  # same landing directory: the duplicate index is rebuilt from it
    try:
        resent_failed = sorted(failed)[::2]
        resent_acked = sorted(acked)[:3]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as http:
            for number in resent_failed + resent_acked:
                response = http.post("/api/v1/events/batch", json={"events": batch(number)})
                assert response.status_code == 200
                if number in acked:  # known before the crash: every event is reported a duplicate
                    assert response.json()["duplicate_indexes"] == list(range(BATCH_SIZE))
        report = close(settings, datetime(2026, 11, 1, tzinfo=timezone.utc))  # the API keeps running
    finally:
        server.stop()

    with open_warehouse(settings) as warehouse:
        raw = Counter((r["external_subscription_id"], r["transaction_id"]) for r in warehouse.query(
            "select external_subscription_id, transaction_id from billhouse_raw.events"))
        deduplicated = Counter((r["external_subscription_id"], r["transaction_id"]) for r in warehouse.query(
            "select external_subscription_id, transaction_id from billhouse.int_events_deduplicated"))

    def identities(numbers) -> set:
        return {(e["external_subscription_id"], e["transaction_id"]) for n in numbers for e in batch(n)}

    sent_twice = identities(resent_failed) | identities(resent_acked)
    assert identities(acked) <= set(deduplicated), "an acknowledged event was lost"
    assert identities(resent_failed) <= set(deduplicated)
    assert set(deduplicated) <= identities(acked | failed), "an event nobody sent was billed"
    assert max(deduplicated.values()) == 1
    # the loader landed each frame once: an identity sent once is stored at most once
    assert all(count == 1 for identity, count in raw.items() if identity not in sent_twice)
    assert all(count <= 2 for count in raw.values())

    billed = {invoice.external_customer_id: invoice.total_cents for invoice in report.invoices}
    expected = {f"cus_{i}": 100 * sum(1 for sub, _ in deduplicated if sub == f"sub_{i}") for i in range(1, 4)}
    assert billed == expected
    assert sum(billed.values()) >= 100 * len(identities(acked))

    with open_warehouse(settings) as warehouse:
        assert load_landed_events(warehouse, landing_dir(settings)).rows == 0
    rerun = close(settings, datetime(2026, 11, 1, tzinfo=timezone.utc))
    assert rerun.created == []
    assert {i.external_customer_id: i.total_cents for i in rerun.invoices} == billed
