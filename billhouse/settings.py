"""Where billhouse keeps its data and which engines it talks to.

Everything lives under one data directory (default ``.billhouse/`` in the working
directory, or ``BILLHOUSE_HOME``): the embedded ClickHouse store, the embedded
PostgreSQL cluster, dbt's working files and the rendered invoices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # A PostgreSQL URL for the ledger; None starts the embedded server in data_dir.
    database_url: str | None = None
    # dbt target: "chdb" (embedded), "clickhouse" (a server) or "postgres".
    warehouse_target: str = "chdb"

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None) -> Settings:
        home = data_dir or os.environ.get("BILLHOUSE_HOME") or ".billhouse"
        return cls(
            data_dir=Path(home).resolve(),
            database_url=os.environ.get("DATABASE_URL") or None,
            warehouse_target=os.environ.get("BILLHOUSE_TARGET", "chdb"),
        )

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def identity_index_dir(self) -> Path:
        """The embedded store's identity index (billhouse/identity_sync.py)."""
        return self.data_dir / "identity_index"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def invoices_dir(self) -> Path:
        return self.data_dir / "invoices"

    @property
    def dbt_target_dir(self) -> Path:
        return self.data_dir / "dbt" / "target"

    @property
    def dbt_log_dir(self) -> Path:
        return self.data_dir / "dbt" / "logs"

    @property
    def dbt_code_cache_dir(self) -> Path:
        """The Python code compiled from the project's Jinja (billhouse/jinja_code_cache.py)."""
        return self.data_dir / "dbt" / "jinja_code"
