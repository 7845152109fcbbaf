"""dbt adapter for embedded ClickHouse (chDB).

Everything — SQL, relations, materializations, macros — is dbt-clickhouse's. The only
difference is the transport: queries run in-process through clickhouse-connect's
``interface="chdb"`` client against a data directory, with no server.
"""

from dbt.adapters.base import AdapterPlugin
from dbt.adapters.chdb.credentials import ChdbCredentials
from dbt.adapters.chdb.impl import ChdbAdapter
from dbt.include import chdb

Plugin = AdapterPlugin(
    adapter=ChdbAdapter,
    credentials=ChdbCredentials,
    include_path=chdb.PACKAGE_PATH,
    dependencies=["clickhouse"],
)
