{#- sum_agg: the sum of the field over the period's events (0 when none); recurring:
    over every event up to the period end, so the value carries over. -#}
{% macro sum_agg(value, in_period, recurring) -%}
    {{ return(adapter.dispatch('sum_agg', 'billhouse')(value, in_period, recurring)) }}
{%- endmacro %}

{% macro default__sum_agg(value, in_period, recurring) -%}
    {{ billhouse.to_decimal(
        'coalesce(sum(case when ' ~ in_period ~ ' = 1 or ' ~ recurring ~ ' then ' ~ value ~ ' end), 0)'
    ) }}
{%- endmacro %}
