"""The landing writer appends every submitted frame durably, in submission order.

Runs the real writer thread on a tmp landing directory: row frames (bytes) and body
frames (buffers built in the writer thread, appended with writev) read back intact;
a frame that cannot be built fails its request and breaks the writer — it never
leaves a request waiting.
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import msgspec
import pytest

from ingestion.errors import LandingError
from ingestion.landing import LandingWriter
from ingestion.metrics import IngestMetrics
from ingestion.segments import body_frame_parts, encode_frame, list_segments, read_frames, read_identities

BODY = msgspec.json.encode({"events": [{"transaction_id": "t1", "external_subscription_id": "s", "code": "c",
                                        "timestamp": 1_793_491_200, "properties": {"b": 2, "a": 1}}]})


def test_row_and_body_frames_land_in_order_and_read_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = LandingWriter(tmp_path, IngestMetrics())
        assert writer.open(lambda sub, tx: None) == 0
        writer.start(asyncio.get_running_loop())
        try:
            futures = []
            for i in range(40):
                at = writer.next_ingested_at_us()
                if i % 2:
                    futures.append(writer.submit(at, partial(body_frame_parts, BODY, 1_000 + i, 1, at), 1))
                else:
                    futures.append(writer.submit(at, encode_frame([(f"r{i}", "s", "c", i, "{}")], at), 1))
            await asyncio.gather(*futures)
        finally:
            writer.close()

    asyncio.run(scenario())
    (segment,) = list_segments(tmp_path)
    frames = list(read_frames(segment))
    assert len(frames) == 40
    assert [f.rows[0][0] for f in frames[::2]] == [f"r{i}" for i in range(0, 40, 2)]
    assert all(f.rows == [("t1", "s", "c", 1_793_491_200_000, '{"a": 1, "b": 2}')] for f in frames[1::2])
    assert [ids for _, ids in read_identities(segment)][:2] == [[("s", "r0")], [("s", "t1")]]
    assert frames == sorted(frames, key=lambda f: f.ingested_at_us)


def test_a_frame_that_cannot_be_built_fails_its_request_and_breaks_the_writer(tmp_path: Path) -> None:
    def broken_frame() -> list[bytes]:
        raise ValueError("cannot build")

    async def scenario() -> None:
        writer = LandingWriter(tmp_path, IngestMetrics())
        writer.open(lambda sub, tx: None)
        writer.start(asyncio.get_running_loop())
        try:
            with pytest.raises(LandingError):
                await asyncio.wait_for(writer.submit(writer.next_ingested_at_us(), broken_frame, 1), 10)
            assert writer.broken
            with pytest.raises(LandingError):
                at = writer.next_ingested_at_us()
                await asyncio.wait_for(writer.submit(at, encode_frame([("t", "s", "c", 0, "{}")], at), 1), 10)
        finally:
            writer.close()

    asyncio.run(scenario())
    assert all(list(read_frames(path)) == [] for path in list_segments(tmp_path))
