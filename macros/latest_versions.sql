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


{#- The keyword of a filter applied before the modifier above takes the latest versions:
    PREWHERE on ClickHouse, where a WHERE is applied after FINAL, so that the filter
    could not skip a part and every row of the table is merged first; WHERE elsewhere.
    Only for columns that every version of a key shares (billed_fees: a fee's issuing
    date, fixed by its invoice). -#}
{% macro before_latest_versions_filter() -%}
    {{ return(adapter.dispatch('before_latest_versions_filter', 'billhouse')()) }}
{%- endmacro %}

{% macro default__before_latest_versions_filter() -%}
    where
{%- endmacro %}

{% macro clickhouse__before_latest_versions_filter() -%}
    prewhere
{%- endmacro %}
