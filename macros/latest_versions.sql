{#- The modifier that reads each key of a raw table once, at its latest version. On
    ClickHouse the tables the ledger mirrors (billed_fees) are ReplacingMergeTree: until
    their parts merge, a key may still have older versions, and FINAL reads the latest
    only. PostgreSQL updates the row in place and needs nothing. -#}
{% macro latest_versions_modifier() -%}
    {{ return(adapter.dispatch('latest_versions_modifier', 'billhouse')()) }}
{%- endmacro %}

{% macro default__latest_versions_modifier() -%}
{%- endmacro %}

{% macro clickhouse__latest_versions_modifier() -%}
    final
{%- endmacro %}
