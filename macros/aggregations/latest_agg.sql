{#- latest_agg: the field value of the period's latest event (by timestamp, then by
    acceptance order); 0 when none. -#}
{% macro latest_agg(value, in_period, event_at, ingested_at, transaction_id) -%}
    {{ return(adapter.dispatch('latest_agg', 'billhouse')(value, in_period, event_at, ingested_at, transaction_id)) }}
{%- endmacro %}

{% macro default__latest_agg(value, in_period, event_at, ingested_at, transaction_id) -%}
    {{ billhouse.to_decimal(
        'coalesce((array_agg(' ~ value ~ ' order by ' ~ event_at ~ ' desc, ' ~ ingested_at ~ ' desc, '
        ~ transaction_id ~ ' desc) filter (where ' ~ in_period ~ ' = 1))[1], 0)'
    ) }}
{%- endmacro %}

{% macro clickhouse__latest_agg(value, in_period, event_at, ingested_at, transaction_id) -%}
    {{ billhouse.to_decimal(
        'coalesce(argMaxIf(' ~ value ~ ', tuple(' ~ event_at ~ ', ' ~ ingested_at ~ ', ' ~ transaction_id
        ~ '), ' ~ in_period ~ ' = 1), 0)'
    ) }}
{%- endmacro %}
