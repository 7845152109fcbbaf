"""Landing segments: the durable, append-only files the API writes and the close loads.

A landing directory holds segment files named ``<first ingested_at µs, 20 digits>.seg``.
Each accepted request becomes one *frame*: a fixed header (magic, payload length,
CRC-32 of the payload, ``ingested_at`` in Unix microseconds, row count) followed by a
payload of one of two kinds:

* ``BHF1`` *rows*: msgpack, the list of rows ``[transaction_id,
  external_subscription_id, code, timestamp_ms, properties_json]``;
* ``BHB1`` *body*: the arrival instant (Unix ms, 8 bytes) then the request body
  exactly as received, written for a batch ``decoding.check_batch`` found plain and
  valid. Its rows are ``decoding.decode_batch(body, now_ms=arrival)`` — the same
  decoder, so the same rows the API would have built — computed when the frame is
  read (by the close's loader), not on the API's hot path.

``ingested_at`` is strictly increasing over the whole directory, so it names a frame
uniquely.

Only one process writes a landing directory (``writer.lock``) and it only ever appends
to a segment it created, so a bad frame (short, or CRC mismatch) can only be the tail
being written, or torn by a crash before its fsync — never acknowledged. Readers stop
at the first bad frame and simply retry later.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

MAGIC = b"BHF1"  # payload: msgpack rows
BODY_MAGIC = b"BHB1"  # payload: arrival ms + a plain, valid batch body
ARRIVAL = struct.Struct("<q")
# magic, payload length, crc32(payload), ingested_at (µs), row count
HEADER = struct.Struct("<4sIIqI")
SEGMENT_SUFFIX = ".seg"

Row = tuple[str, str, str, int, str]  # transaction_id, subscription, code, timestamp ms, properties

_encode = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[tuple[str, str, str, int, str]]).decode


@dataclass(frozen=True)
class Frame:
    segment: str
    offset: int  # byte offset of the header in the segment
    end: int  # byte offset just past the payload
    ingested_at_us: int
    rows: list[Row]  # empty when read without decoding rows
    payload: bytes | None = None  # a body frame's payload, when read without decoding rows


def encode_frame(rows: list[Row], ingested_at_us: int) -> bytes:
    payload = _encode(rows)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), ingested_at_us, len(rows)) + payload


def body_frame_parts(body: bytes, now_ms: int, count: int, ingested_at_us: int) -> list[bytes]:
    """A frame holding a checked batch body as received, as two buffers (head, body)
    to write one after the other: the body is not copied. The CRC is computed here —
    the landing writer thread calls this, and zlib releases the GIL on large buffers."""
    arrival = ARRIVAL.pack(now_ms)
    crc = zlib.crc32(body, zlib.crc32(arrival))
    return [HEADER.pack(BODY_MAGIC, ARRIVAL.size + len(body), crc, ingested_at_us, count) + arrival, body]


def encode_body_frame(body: bytes, now_ms: int, count: int, ingested_at_us: int) -> bytes:
    """The same frame as one bytes object."""
    return b"".join(body_frame_parts(body, now_ms, count, ingested_at_us))


def body_frame_rows(payload: bytes, count: int) -> list[Row]:
    from ingestion.decoding import decode_batch  # decoding imports Row from here

    (now_ms,) = ARRIVAL.unpack_from(payload)
    return decode_batch(payload[ARRIVAL.size :], max(count, 1), now_ms=now_ms)


class _IdentityEvent(msgspec.Struct):
    transaction_id: str
    external_subscription_id: str


class _IdentityBatch(msgspec.Struct):
    events: list[_IdentityEvent]


_decode_identities = msgspec.json.Decoder(_IdentityBatch).decode


def read_identities(path: Path) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """Per intact frame: its ``ingested_at`` and the (subscription, transaction) ids of
    its rows — for rebuilding the duplicate index without decoding whole events."""
    for frame in read_frames(path, decode_rows=False):
        if frame.payload is not None:  # a body frame: only the two ids are needed
            events = _decode_identities(frame.payload[ARRIVAL.size :]).events
            yield frame.ingested_at_us, [(e.external_subscription_id, e.transaction_id) for e in events]
        else:
            yield frame.ingested_at_us, [(row[1], row[0]) for row in frame.rows]


def segment_name(first_ingested_at_us: int) -> str:
    return f"{first_ingested_at_us:020d}{SEGMENT_SUFFIX}"


def list_segments(landing_dir: Path) -> list[Path]:
    """Segment files in write order (their names sort by first ``ingested_at``)."""
    if not landing_dir.exists():
        return []
    return sorted(p for p in landing_dir.iterdir() if p.name.endswith(SEGMENT_SUFFIX))


def read_frames(path: Path, start: int = 0, decode_rows: bool = True) -> Iterator[Frame]:
    """Yield the complete, intact frames of a segment from byte ``start`` on.

    Stops at end of file or at the first short or corrupt frame (a tail still being
    written, or torn by a crash: never acknowledged). Without ``decode_rows`` a rows
    frame comes with its rows all the same (they are cheap) and a body frame with its
    payload instead.
    """
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    position = 0
    header_size = HEADER.size
    while position + header_size <= len(data):
        magic, length, crc, ingested_at_us, count = HEADER.unpack_from(data, position)
        body_start = position + header_size
        body_end = body_start + length
        if magic not in (MAGIC, BODY_MAGIC) or body_end > len(data):
            return
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            return
        if magic == MAGIC:
            rows = _decode_rows(payload)
            if len(rows) != count:
                return
            yield Frame(path.name, start + position, start + body_end, ingested_at_us, rows)
        elif decode_rows:
            rows = body_frame_rows(payload, count)
            if len(rows) != count:
                return
            yield Frame(path.name, start + position, start + body_end, ingested_at_us, rows)
        else:
            yield Frame(path.name, start + position, start + body_end, ingested_at_us, [], payload)
        position = body_end


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
