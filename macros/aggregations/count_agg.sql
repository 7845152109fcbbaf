{#- count_agg: the number of the period's (deduplicated) events. `counted`: how many of
    them a row stands for (an event: in_period, 1 or 0; a bucket of events: its count). -#}
{% macro count_agg(counted) -%}
    {{ return(adapter.dispatch('count_agg', 'billhouse')(counted)) }}
{%- endmacro %}

{% macro default__count_agg(counted) -%}
    {{ billhouse.to_decimal('sum(' ~ counted ~ ')') }}
{%- endmacro %}
