{#- A table model in one statement on ClickHouse: `create table … as select`.
    dbt-clickhouse creates the table `empty as (select …)` and then inserts the same
    select, so ClickHouse plans every model's query twice; planning is most of a small
    model's time in a close (docs/performance.md). Temporary tables, contracts and
    projections or indexes keep the adapter's two steps (their DDL needs the columns
    before the rows). -#}
{% macro clickhouse__create_table_as(temporary, relation, sql) -%}
    {%- if temporary or config.get('contract').enforced
          or config.get('projections') or config.get('indexes') -%}
        {{ dbt.clickhouse__create_table_as(temporary, relation, sql) }}
    {%- else -%}
        {%- set sql_header = config.get('sql_header', none) -%}
        {{ sql_header if sql_header is not none }}
        create table {{ relation }}
        {{ on_cluster_clause(relation) }}
        {{ engine_clause() }}
        {{ order_cols(label="order by") }}
        {{ primary_key_clause(label="primary key") }}
        {{ partition_cols(label="partition by") }}
        {{ ttl_config(label="ttl") }}
        {{ adapter.get_model_settings(model, config.get('engine', default='MergeTree')) }}
        as (
            {{ sql }}
        )
        {{ adapter.get_model_query_settings(model) }}
    {%- endif %}
{%- endmacro %}
