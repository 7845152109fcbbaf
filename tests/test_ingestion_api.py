"""The events API over real HTTP: a real server process, the real ledger, real files.

One server (``billhouse serve`` in a subprocess on a free loopback port) per module,
checking events against the test catalog. Each refused request is checked to have
written nothing: the landed rows are counted from the segment files themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from lago_python_client.client import Client as LagoClient
from lago_python_client.models.event import BatchEvent, Event as LagoEvent

from billhouse.ledger_connection import ledger, stop_ledger
from billhouse.settings import Settings
from ingestion.api_keys import create_api_key, revoke_api_key
from ingestion.app import OPENAPI_PATH
from ingestion.config import landing_dir
from ingestion.process import ServerProcess
from ingestion.segments import list_segments, read_frames

from .conftest import CATALOG


class Api:
    def __init__(self, server: ServerProcess, settings: Settings, key: str, revoked_key: str) -> None:
        self.server = server
        self.settings = settings
        self.key = key
        self.revoked_key = revoked_key
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def post(self, path: str, body: object, **kwargs: object) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(path, content=content, **kwargs)

    def landed(self) -> list[tuple]:
        """Every row in the landing files, in write order."""
        return [row for path in list_segments(landing_dir(self.settings)) for f in read_frames(path) for row in f.rows]

    def metric(self, name: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data_dir = Path(tmp_path_factory.mktemp("ingestion_api"))
    settings = Settings(data_dir=data_dir)
    catalog_path = data_dir / "catalog.yml"
    catalog_path.write_text(yaml.safe_dump(CATALOG))
    try:
        with ledger(settings) as conn:
            key = create_api_key(conn, "tests").secret
            revoked = create_api_key(conn, "revoked")
            revoke_api_key(conn, revoked.record.key_prefix)
        with ServerProcess(data_dir, "--catalog", str(catalog_path)) as server:
            client = Api(server, settings, key, revoked.secret)
            yield client
            client.http.close()
    finally:
        stop_ledger(settings)


def ev(tx: str, sub: str = "sub_a", code: str = "api_calls", **extra: object) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code, **extra}


def test_a_single_event_is_acknowledged_in_lagos_shape_and_landed(api: Api) -> None:
    before = len(api.landed())
    response = api.post("/api/v1/events", {"event": ev("single-1", timestamp=1793491200.1239,
                                                          properties={"region": "eu"})})
    assert response.status_code == 200, response.text
    event = response.json()["event"]
    assert event["transaction_id"] == "single-1"
    assert event["timestamp"] == "2026-11-01T00:00:00.123Z"  # truncated to the millisecond
    assert event["properties"] == {"region": "eu"}
    assert event["duplicate"] is False
    assert api.landed()[before:] == [("single-1", "sub_a", "api_calls", 1793491200123, '{"region": "eu"}')]


def test_a_batch_is_landed_whole_with_every_timestamp_form(api: Api) -> None:
    before = len(api.landed())
    batch = [
        ev("batch-1", timestamp=1793491200),
        ev("batch-2", timestamp="2026-11-01T01:00:00+01:00"),
        ev("batch-3", code="storage_gb", timestamp="2026-11-01T00:00:00.5Z", properties={"gb": "2.5"}),
    ]
    response = api.post("/api/v1/events/batch", {"events": batch})
    assert response.status_code == 200, response.text
    assert response.json() == {"events": 3, "duplicate_indexes": []}
    assert [(r[0], r[3]) for r in api.landed()[before:]] == [
        ("batch-1", 1793491200000), ("batch-2", 1793491200000), ("batch-3", 1793491200500)
    ]


def test_an_event_without_timestamp_gets_its_arrival_time(api: Api) -> None:
    import time

    sent_ms = time.time_ns() // 1_000_000
    assert api.post("/api/v1/events", {"event": ev("now-1")}).status_code == 200
    assert abs(api.landed()[-1][3] - sent_ms) < 5_000


@pytest.mark.parametrize(
    ("body", "index", "field", "reason"),
    [
        ({"events": [ev(f"big-{i}") for i in range(101)]}, 100, "events", "at most 100 events per call, got 101"),
        ({"events": []}, 0, "events", "at least one event"),
        ({"event": ev("x")}, 0, "events", "must be a list"),
        ({"events": [ev("ok-1"), {"external_subscription_id": "s", "code": "api_calls"}]}, 1, "transaction_id", "required"),
        ({"events": [ev("ok-1"), ev("bad", sub="")]}, 1, "external_subscription_id", "non-empty string"),
        ({"events": [ev("ok-1"), ev("ok-2"), ev(7)]}, 2, "transaction_id", "must be a non-empty string"),
        ({"events": [ev("ok-1"), ev("bad", code=None)]}, 1, "code", "required"),
        ({"events": [ev("bad", timestamp="yesterday")]}, 0, "timestamp", "not an ISO 8601 instant"),
        ({"events": [ev("bad", timestamp="2026-11-01T00:00:00")]}, 0, "timestamp", "no UTC offset"),
        ({"events": [ev("bad", timestamp=True)]}, 0, "timestamp", "not an instant"),
        ({"events": [ev("bad", timestamp=99999999999)]}, 0, "timestamp", "between 1900-01-01 and 2299-12-31"),
        ({"events": [ev("bad", properties=[1])]}, 0, "properties", "must be an object"),
        ({"events": [ev("bad", "sub_b", "storage_gb", properties={})]}, 0, "properties.gb", "required by billable metric"),
        ({"events": [ev("bad", "sub_b", "storage_gb", properties={"gb": "lots"})]}, 0, "properties.gb", "must be a number"),
        ({"events": [ev("bad", "sub_b", "storage_gb", properties={"gb": True})]}, 0, "properties.gb", "must be a number"),
        ({"events": [ev("bad", "sub_b", "storage_gb", properties={"gb": "1_000"})]}, 0, "properties.gb", "ASCII digits"),
        ({"events": [ev("ok-1"), ev("bad", properties={"note": {"deep": ["a\x00b"]}})]}, 1, "properties", "NUL character"),
        ({"events": [ev("x" * 256)]}, 0, "transaction_id", "longer than 255"),
        ({"events": ["not an object"]}, 0, "(event)", "must be an object"),
    ],
)
def test_a_refused_batch_names_index_field_and_reason_and_lands_nothing(api: Api, body, index, field, reason) -> None:
    before = len(api.landed())
    response = api.post("/api/v1/events/batch", body)
    assert response.status_code == 422, response.text
    details = response.json()["error_details"]
    assert (details["index"], details["field"]) == (index, field)
    assert reason in details["reason"]
    assert len(api.landed()) == before


def test_a_refused_single_event_names_the_field(api: Api) -> None:
    response = api.post("/api/v1/events", {"event": ev("bad-single", timestamp="soon")})
    assert response.status_code == 422
    assert response.json()["error_details"]["field"] == "timestamp"
    response = api.post("/api/v1/events", {"events": [ev("wrong-envelope")]})
    assert response.status_code == 422
    assert response.json()["error_details"]["field"] == "event"


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"events": [', b"\xff\xfe"])
def test_malformed_json_is_400_and_lands_nothing(api: Api, body: bytes) -> None:
    before = len(api.landed())
    response = api.post("/api/v1/events/batch", body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert len(api.landed()) == before


def test_oversize_bodies_are_refused_with_413_declared_or_streamed(api: Api) -> None:
    before = len(api.landed())
    huge = json.dumps({"events": [ev("huge", properties={"pad": "x" * 2_000_000})]}).encode()
    assert api.post("/api/v1/events/batch", huge).status_code == 413

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to refuse early
        for i in range(0, len(huge), 65536):
            yield huge[i : i + 65536]

    response = api.http.post("/api/v1/events/batch", content=chunks())
    assert response.status_code == 413
    assert len(api.landed()) == before


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer bh_wrong", "Basic dGVzdDp0ZXN0", "revoked"],
)
def test_a_missing_wrong_or_revoked_key_is_401_and_lands_nothing(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    if authorization == "revoked":
        headers = {"Authorization": f"Bearer {api.revoked_key}"}
    before = len(api.landed())
    response = httpx.post(api.server.url + "/api/v1/events/batch", headers=headers,
                          content=json.dumps({"events": [ev("unauthorized")]}), timeout=10)
    assert response.status_code == 401
    assert len(api.landed()) == before


def test_a_resent_identity_is_acknowledged_reported_and_counted_once(api: Api) -> None:
    accepted = api.metric("billhouse_ingest_events_accepted_total")
    duplicate = api.metric("billhouse_ingest_events_duplicate_total")
    first = api.post("/api/v1/events", {"event": ev("dup-1", timestamp=1793491200)})
    again = api.post("/api/v1/events", {"event": ev("dup-1", timestamp=1793491300, properties={"x": 1})})
    other_sub = api.post("/api/v1/events", {"event": ev("dup-1", sub="sub_b", timestamp=1793491200)})
    assert [r.json()["event"]["duplicate"] for r in (first, again, other_sub)] == [False, True, False]
    batch = api.post("/api/v1/events/batch", {"events": [ev("dup-2"), ev("dup-1"), ev("dup-2"), ev("dup-3")]})
    assert batch.json() == {"events": 4, "duplicate_indexes": [1, 2]}
    assert api.metric("billhouse_ingest_events_accepted_total") - accepted == 4  # dup-1 a and b, dup-2, dup-3
    assert api.metric("billhouse_ingest_events_duplicate_total") - duplicate == 3


def test_the_lago_python_client_creates_single_events_and_batches(api: Api) -> None:
    before = len(api.landed())
    lago = LagoClient(api_key=api.key, api_url=api.server.url)
    created = lago.events.create(LagoEvent(
        transaction_id="lago-1", external_subscription_id="sub_a", code="api_calls",
        timestamp=1793491200, properties={"region": "eu"},
    ))
    assert created is not None
    assert created.transaction_id == "lago-1"
    assert created.timestamp == "2026-11-01T00:00:00.000Z"
    lago.events.batch_create(BatchEvent(events=[
        LagoEvent(transaction_id="lago-2", external_subscription_id="sub_b", code="storage_gb",
                  timestamp="2026-11-02T00:00:00Z", properties={"gb": "1.5"}),
        LagoEvent(transaction_id="lago-3", external_subscription_id="sub_a", code="api_calls"),
    ]))
    assert [r[0] for r in api.landed()[before:]] == ["lago-1", "lago-2", "lago-3"]
    from lago_python_client.exceptions import LagoApiError

    with pytest.raises(LagoApiError) as error:
        LagoClient(api_key="bh_wrong", api_url=api.server.url).events.create(
            LagoEvent(transaction_id="lago-4", external_subscription_id="sub_a", code="api_calls"))
    assert error.value.status_code == 401


def test_the_served_openapi_document_is_the_one_in_the_repository(api: Api) -> None:
    served = api.http.get("/openapi.json")
    assert served.status_code == 200
    assert served.content == OPENAPI_PATH.read_bytes()
    document = served.json()
    batch = document["paths"]["/api/v1/events/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"]["maxItems"] == 100
    assert set(batch["responses"]) == {"200", "400", "401", "413", "422", "503"}


def test_health_and_prometheus_metrics(api: Api) -> None:
    assert api.http.get("/health").json()["status"] == "ok"
    text = api.http.get("/metrics").text
    for name in ("billhouse_ingest_events_accepted_total", "billhouse_ingest_events_duplicate_total",
                 "billhouse_ingest_events_rejected_total", "billhouse_ingest_flush_seconds_count",
                 'billhouse_ingest_flush_seconds_bucket{le="+Inf"}', 'billhouse_ingest_requests_rejected_total{status="401"}'):
        assert name in text
    assert api.metric("billhouse_ingest_flush_seconds_count") >= 1
    assert api.metric("billhouse_ingest_events_rejected_total") >= 101
    assert api.http.get("/nope").status_code == 404
    assert api.http.get("/api/v1/events").status_code == 405
