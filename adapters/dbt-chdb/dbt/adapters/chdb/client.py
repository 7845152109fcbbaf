"""The one piece that differs from dbt-clickhouse: an in-process chDB client."""

import os

import clickhouse_connect
from dbt.adapters.clickhouse import dbclient
from dbt.adapters.clickhouse.httpclient import ChHttpClient

from dbt.adapters.chdb.credentials import ChdbCredentials


class ChdbClient(ChHttpClient):
    """dbt-clickhouse's clickhouse-connect wrapper, opened on a chDB data directory."""

    def _create_client(self, credentials: ChdbCredentials):
        os.makedirs(credentials.path, exist_ok=True)
        # session_id is an HTTP-server notion; chDB keeps session state per handle.
        settings = {k: v for k, v in self._conn_settings.items() if k != "session_id"}
        return clickhouse_connect.get_client(
            interface="chdb",
            path=credentials.path,
            settings=settings,
        )

    def _ensure_database(self, database_engine, cluster_name) -> None:
        # dbt-clickhouse checks that the schema's database exists once per process (one
        # server per process); each chDB data directory is a server of its own, and
        # billhouse runs dbt on several in one process (billhouse/dbt_runner.py).
        with dbclient._database_lock:
            dbclient._ensured_databases.discard(self.database)
        super()._ensure_database(database_engine, cluster_name)
