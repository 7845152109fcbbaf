{#- max_agg: the largest field value of the period's events (0 when none). -#}
{% macro max_agg(value, in_period) -%}
    {{ return(adapter.dispatch('max_agg', 'billhouse')(value, in_period)) }}
{%- endmacro %}

{% macro default__max_agg(value, in_period) -%}
    {{ billhouse.to_decimal('coalesce(max(case when ' ~ in_period ~ ' = 1 then ' ~ value ~ ' end), 0)') }}
{%- endmacro %}
