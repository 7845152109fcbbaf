"""The identities that newly stored events duplicate, found with the identity index
instead of a pass over the store (embedded ClickHouse; docs/operations.md).

``int_event_identities_duplicated`` lists the event identities stored more than once (as
hashes). Built alone, each close semi-joins the events stored since the previous close
with every stored event: a pass over the whole store, which grows with it (3.3 M new
events: 2.2 s against 107 M stored, 3.5-3.8 s against 207 M; docs/performance.md).
Before dbt, each close now calls ``sync_identity_index``, which

1. reads the identity hashes of the events stored after the block the index covers, up
   to the store's last block (``_block_number``), and sorts them;
2. takes as duplicated a hash the batch holds twice or the index already holds;
3. appends those to ``billhouse_raw.identity_index_log`` (copies = 2), then a marker row
   (copies = 0) with the last block;
4. adds the batch to the index (billhouse/identity_index.py) and records that block.

The model copies the log's rows and scans by itself only the events stored after the
log's marker: none, after a sync. A hash shared by two identities is harmless: the
models rank the copies of a duplicated hash by the full identity.

The first sync of a store, or of a re-created events table (blocks are numbered per
table, so the index records its UUID), indexes every stored event the same way, one
partition at a time (16 bytes of memory per event of the largest partition while it runs).

The log covers the events table from its first block without a gap: a sync appends from
the block the index covers, and the log is written before the index, so a crash in
between only makes the next sync log the same blocks again (readers take the log as a
set). An index that covers more than the log (a log emptied by hand) is rebuilt.
Nothing else may insert events while a sync runs: the embedded store's lock sees to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from billhouse.identity_index import HashArray, IdentityIndex
from billhouse.system_tables import event_partitions, events_last_block, table_field

LOG_TABLE = "identity_index_log"


@dataclass(frozen=True)
class IndexSync:
    events: int  # events read: stored since the previous sync, or all on a rebuild
    duplicated: int  # hashes logged as stored more than once
    through_block: int
    rebuilt: bool


def log_table_ddl(schema: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {schema}.{LOG_TABLE} (\n"
        "  `identity_hash` UInt64,\n"
        "  `copies` UInt64,\n"
        "  `scanned_through_block` UInt64,\n"
        "  `events_table_uuid` String\n"
        ") ENGINE = MergeTree ORDER BY (events_table_uuid, scanned_through_block)"
    )


def sync_identity_index(warehouse: Any, directory: Path) -> IndexSync:
    client, schema = warehouse.client, warehouse.schema
    table_uuid = table_field(client, schema, "events", "uuid")
    last_block = events_last_block(client, schema)
    logged_through = int(client.command(
        f"SELECT max(scanned_through_block) FROM {schema}.{LOG_TABLE}"
        " WHERE copies = 0 AND events_table_uuid = {uuid:String}",
        parameters={"uuid": table_uuid},
    ) or 0)
    index = IdentityIndex.open(directory)
    covers = index.covers or {}
    resumable = covers.get("events_table_uuid") == table_uuid and covers["through_block"] <= logged_through
    from_block = covers["through_block"] if resumable else None
    if from_block is not None and last_block <= from_block:
        return IndexSync(0, 0, from_block, rebuilt=False)
    covers_now = {"events_table_uuid": table_uuid, "through_block": last_block}
    if from_block is None:
        # every stored event, a partition at a time (memory: 16 bytes per event of the
        # largest partition); the runs are saved covering nothing until the log is written
        index.clear()
        duplicated, events = [], 0
        for partition_id in event_partitions(client, schema):
            hashes = _stored_hashes(client, schema, f"_partition_id = '{partition_id}'", last_block)
            new, found = _new_and_duplicated(hashes, index)
            index.save(new, covers=None)
            duplicated.append(found)
            events += len(hashes)
        logged = np.unique(np.concatenate(duplicated)) if duplicated else np.array([], dtype=np.uint64)
        _append_log(client, schema, logged, last_block, table_uuid)
        index.save(np.array([], dtype=np.uint64), covers_now)
        return IndexSync(events, len(logged), last_block, rebuilt=True)
    newer = f"toUInt64(splitByChar('_', _part)[3]) > {from_block} AND _block_number > {from_block}"
    hashes = _stored_hashes(client, schema, newer, last_block)
    new, logged = _new_and_duplicated(hashes, index)
    _append_log(client, schema, logged, last_block, table_uuid)
    index.save(new, covers_now)
    return IndexSync(len(hashes), len(logged), last_block, rebuilt=False)


def _new_and_duplicated(hashes: HashArray, index: IdentityIndex) -> tuple[HashArray, HashArray]:
    """Of sorted hashes: those the index lacks (once each), and those stored more than
    once (held by the index, or twice among them)."""
    if not len(hashes):
        return hashes, hashes
    distinct = hashes[np.concatenate(([True], hashes[1:] != hashes[:-1]))]
    known = index.contains(distinct)
    repeated = hashes[1:][hashes[1:] == hashes[:-1]]
    return distinct[~known], np.unique(np.concatenate((repeated, distinct[known])))


def _append_log(client: Any, schema: str, duplicated: HashArray, through_block: int, table_uuid: str) -> None:
    client.raw_insert(
        f"{schema}.{LOG_TABLE}", ["identity_hash", "copies", "scanned_through_block", "events_table_uuid"],
        _log_rows(duplicated, through_block, table_uuid), fmt="RowBinary",
    )


def _log_rows(duplicated: HashArray, through_block: int, table_uuid: str) -> bytes:
    """The log's rows in RowBinary, built by numpy (a resent day of events logs millions
    of hashes): each duplicated hash with copies = 2, then the marker (hash 0, copies 0)."""
    uuid = table_uuid.encode()
    if not 0 < len(uuid) < 128:  # one byte of length prefix
        raise ValueError(f"events_table_uuid: unexpected length {len(uuid)}: {table_uuid!r}")
    rows = np.zeros(len(duplicated) + 1, dtype=[
        ("identity_hash", "<u8"), ("copies", "<u8"), ("scanned_through_block", "<u8"),
        ("uuid_length", "u1"), ("events_table_uuid", f"S{len(uuid)}"),
    ])
    rows["identity_hash"][:-1] = duplicated
    rows["copies"][:-1] = 2
    rows["scanned_through_block"] = through_block
    rows["uuid_length"] = len(uuid)
    rows["events_table_uuid"] = uuid
    return rows.tobytes()


def _stored_hashes(client: Any, schema: str, condition: str, through_block: int) -> HashArray:
    """The identity hashes of the stored events that match ``condition``, up to
    ``through_block``, sorted."""
    raw = client.raw_query(
        f"SELECT identity_hash FROM {schema}.events WHERE {condition} AND _block_number <= {through_block}",
        fmt="RowBinary",
    )
    return np.sort(np.frombuffer(raw, dtype="<u8"))
