"""The duplicate index: which (external_subscription_id, transaction_id) were accepted.

It only *reports* duplicates (in responses and ``/metrics``); it never decides what is
stored. Every valid event is landed, and billing counts each identity once because the
models keep the first accepted copy (``int_events_deduplicated``, by ``ingested_at``).
So a stale or lost index can miscount duplicates but never lose or double-bill an event.

Durability comes from the landing segments themselves: at startup the writer replays
every landed row into the index, so it covers every event ever acknowledged by this
landing directory ("forever" as long as the segments are kept — they are). Memory is
about 100 bytes plus the ids' length per identity, in one Python set.

An identity's key is ``external_subscription_id + NUL + transaction_id`` (one short
string: cheap to build, hash and keep); a subscription id holding a NUL itself (JSON
allows ``\u0000``) would make that ambiguous, so such an identity is keyed by the
tuple instead — a tuple never equals a string, so the two kinds cannot collide.
"""

from __future__ import annotations

from collections.abc import Iterable


def identity_key(external_subscription_id: str, transaction_id: str) -> str | tuple[str, str]:
    if "\x00" in external_subscription_id:
        return (external_subscription_id, transaction_id)
    return external_subscription_id + "\x00" + transaction_id


class DuplicateIndex:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, external_subscription_id: str, transaction_id: str) -> bool:
        """Record an identity; return True when it was already there."""
        key = identity_key(external_subscription_id, transaction_id)
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def mark(self, rows: Iterable[tuple[str, str, str, int, str]]) -> list[int]:
        """Record a request's rows; return the indexes of those already accepted."""
        return self.mark_keys([identity_key(row[1], row[0]) for row in rows])

    def mark_keys(self, keys: list) -> list[int]:
        """Record a request's identity keys; return the indexes of those already accepted."""
        seen = self._seen
        fresh = set(keys)
        if len(fresh) == len(keys) and seen.isdisjoint(fresh):  # the usual case, all in C
            seen |= fresh
            return []
        duplicates: list[int] = []
        for index, key in enumerate(keys):
            if key in seen:
                duplicates.append(index)
            else:
                seen.add(key)
        return duplicates
