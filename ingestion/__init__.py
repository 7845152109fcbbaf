"""The events API (ASGI) and the writers that bring its events into the warehouse.

``ingestion.app`` serves Lago's event endpoints; accepted requests land in fsync'd
segment files (``ingestion.landing``), which the close loads exactly once into
``billhouse_raw.events`` (``ingestion.loader``). See docs/ingestion.md.
"""
