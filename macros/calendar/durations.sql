{#- Exact seconds (scale 3 on ClickHouse) from `start_instant` to `end_instant` (millisecond precision), as a decimal. -#}
{% macro seconds_between(start_instant, end_instant) -%}
    {{ return(adapter.dispatch('seconds_between', 'billhouse')(start_instant, end_instant)) }}
{%- endmacro %}

{% macro default__seconds_between(start_instant, end_instant) -%}
    cast(extract(epoch from ({{ end_instant }} - {{ start_instant }})) as {{ billhouse.decimal_type() }})
{%- endmacro %}

{% macro clickhouse__seconds_between(start_instant, end_instant) -%}
    toDecimal256(dateDiff('millisecond', {{ start_instant }}, {{ end_instant }}), 3) / 1000
{%- endmacro %}
