{#- sum_agg: the sum of the metric's field over the period's events (0 when none). -#}
{% macro sum_agg(value) -%}
    {{ return(adapter.dispatch('sum_agg', 'billhouse')(value)) }}
{%- endmacro %}

{% macro default__sum_agg(value) -%}
    {{ billhouse.to_decimal('coalesce(sum(' ~ value ~ '), 0)') }}
{%- endmacro %}
