"""Settings of the events API: limits, where it lands events, which catalog it checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from billhouse.settings import Settings
from ingestion.landing import DEFAULT_SEGMENT_MAX_BYTES

DEFAULT_MAX_BATCH_EVENTS = 100  # Lago's limit per batch call
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def landing_dir(settings: Settings) -> Path:
    """Where the API lands accepted events and the close loads them from."""
    return settings.data_dir / "landing"


@dataclass(frozen=True)
class IngestConfig:
    landing_dir: Path
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    segment_max_bytes: int = DEFAULT_SEGMENT_MAX_BYTES
    # A catalog YAML: when given, events of its metrics must carry a numeric field.
    catalog_path: Path | None = None
    key_cache_seconds: float = 5.0

    @classmethod
    def for_settings(cls, settings: Settings, **overrides: object) -> IngestConfig:
        return cls(landing_dir=landing_dir(settings), **overrides)  # type: ignore[arg-type]
