{#- count_agg: the number of the period's (deduplicated) events. -#}
{% macro count_agg(in_period) -%}
    {{ return(adapter.dispatch('count_agg', 'billhouse')(in_period)) }}
{%- endmacro %}

{% macro default__count_agg(in_period) -%}
    {{ billhouse.to_decimal('sum(' ~ in_period ~ ')') }}
{%- endmacro %}
