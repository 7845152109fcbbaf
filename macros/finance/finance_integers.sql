{#- Exact integer helpers: a non-negative decimal's floor as a bigint. -#}
{% macro finance_floor_bigint(expression) -%}
    {{ return(adapter.dispatch('finance_floor_bigint', 'billhouse')(expression)) }}
{%- endmacro %}

{% macro default__finance_floor_bigint(expression) -%}
    cast(floor({{ expression }}) as bigint)
{%- endmacro %}

{% macro clickhouse__finance_floor_bigint(expression) -%}
    toInt64(floor({{ expression }}))
{%- endmacro %}
