{#- A relation with one column `n` holding 0, 1, ..., count - 1. -#}
{% macro integer_series(count) -%}
    {{ return(adapter.dispatch('integer_series', 'billhouse')(count)) }}
{%- endmacro %}

{% macro default__integer_series(count) -%}
    select generate_series(0, {{ count }} - 1) as n
{%- endmacro %}

{% macro clickhouse__integer_series(count) -%}
    select toInt64(number) as n from numbers({{ count }})
{%- endmacro %}
