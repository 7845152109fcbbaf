"""Profile fields of a ``type: chdb`` target: dbt-clickhouse's, plus the data ``path``."""

import os
from dataclasses import dataclass

from dbt.adapters.clickhouse.credentials import ClickHouseCredentials


@dataclass
class ChdbCredentials(ClickHouseCredentials):
    path: str = ".billhouse/chdb"
    # The engine is in-process: atomic EXCHANGE always works, and there is no server
    # to probe for it on every connection.
    check_exchange: bool = False

    @property
    def type(self) -> str:
        return "chdb"

    @property
    def unique_field(self) -> str:
        return os.path.realpath(self.path)

    def _connection_keys(self):
        return ("path", "schema", "custom_settings")
