{#-
    unique_count_agg: distinct field values. Non-recurring: values with an `add` event
    in the period. Recurring (seats): values active at any time in the period — added
    before it and not removed by its start, or added during it. Works on one row per
    (bucket, value) carrying `active_at_start` and `added_in_period` (0/1).
-#}
{% macro unique_count_agg(active_at_start, added_in_period, recurring) -%}
    {{ return(adapter.dispatch('unique_count_agg', 'billhouse')(active_at_start, added_in_period, recurring)) }}
{%- endmacro %}

{% macro default__unique_count_agg(active_at_start, added_in_period, recurring) -%}
    {{ billhouse.to_decimal(
        'sum(case when ' ~ added_in_period ~ ' = 1 or (' ~ recurring ~ ' and ' ~ active_at_start ~ ' = 1) then 1 else 0 end)'
    ) }}
{%- endmacro %}
