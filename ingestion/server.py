"""Run the events API under uvicorn (uvloop + httptools, no access log)."""

from __future__ import annotations

import uvicorn

from billhouse.settings import Settings
from ingestion.api_keys import KeyVerifier
from ingestion.app import create_app
from ingestion.config import IngestConfig


def serve(settings: Settings, config: IngestConfig, host: str = "127.0.0.1", port: int = 8080) -> None:
    app = create_app(config, KeyVerifier(settings, cache_seconds=config.key_cache_seconds))
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
    )
