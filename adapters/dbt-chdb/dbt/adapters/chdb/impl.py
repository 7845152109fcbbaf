"""The adapter: dbt-clickhouse's, bound to the chDB connection manager."""

from dbt.adapters.clickhouse.impl import ClickHouseAdapter

from dbt.adapters.chdb.connections import ChdbConnectionManager


class ChdbAdapter(ClickHouseAdapter):
    ConnectionManager = ChdbConnectionManager
