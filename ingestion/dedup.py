"""The duplicate index: which (external_subscription_id, transaction_id) were accepted.

It only *reports* duplicates (in responses and ``/metrics``); it never decides what is
stored. Every valid event is landed, and billing counts each identity once because the
models keep the first accepted copy (``int_events_deduplicated``, by ``ingested_at``).
So a stale or lost index can miscount duplicates but never lose or double-bill an event.

Durability comes from the landing segments themselves: at startup the writer replays
every landed row into the index, so it covers every event ever acknowledged by this
landing directory ("forever" as long as the segments are kept — they are). Memory is
about 100 bytes plus the ids' length per identity, in one Python set.
"""

from __future__ import annotations


class DuplicateIndex:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, external_subscription_id: str, transaction_id: str) -> bool:
        """Record an identity; return True when it was already there."""
        key = f"{len(external_subscription_id)}:{external_subscription_id}{transaction_id}"
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def mark(self, rows: list[tuple[str, str, str, int, str]]) -> list[int]:
        """Record a request's rows; return the indexes of those already accepted."""
        seen = self._seen
        duplicates: list[int] = []
        for index, row in enumerate(rows):
            sub = row[1]
            key = f"{len(sub)}:{sub}{row[0]}"
            if key in seen:
                duplicates.append(index)
            else:
                seen.add(key)
        return duplicates
