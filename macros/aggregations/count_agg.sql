{#- count_agg: the number of (deduplicated) events of the period. -#}
{% macro count_agg(event_id) -%}
    {{ return(adapter.dispatch('count_agg', 'billhouse')(event_id)) }}
{%- endmacro %}

{% macro default__count_agg(event_id) -%}
    {{ billhouse.to_decimal('count(' ~ event_id ~ ')') }}
{%- endmacro %}
