"""Landing segments: the durable, append-only files the API writes and the close loads.

A landing directory holds segment files named ``<first ingested_at µs, 20 digits>.seg``.
Each accepted request becomes one *frame*: a fixed header (magic, payload length,
CRC-32 of the payload, ``ingested_at`` in Unix microseconds, row count) followed by a
msgpack payload, the list of rows ``[transaction_id, external_subscription_id, code,
timestamp_ms, properties_json]``. ``ingested_at`` is strictly increasing over the whole
directory, so it names a frame uniquely.

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

MAGIC = b"BHF1"
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
    rows: list[Row]


def encode_frame(rows: list[Row], ingested_at_us: int) -> bytes:
    payload = _encode(rows)
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), ingested_at_us, len(rows)) + payload


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
    written, or torn by a crash: never acknowledged).
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
        if magic != MAGIC or body_end > len(data):
            return
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            return
        rows = _decode_rows(payload) if decode_rows else []
        if decode_rows and len(rows) != count:
            return
        yield Frame(path.name, start + position, start + body_end, ingested_at_us, rows)
        position = body_end


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
