{#-
    weighted_sum_agg: each event's value changes a running level; the result is the
    time-weighted average level over the period, in seconds:
        ( L0 x D + sum_i v_i x (period_end - t_i) ) / D,   D = period length,
    where L0 is the level at the period start (the sum of earlier changes when
    recurring, else 0): each change counts for the time from its event to the end.
-#}
{% macro weighted_sum_agg(value, in_period, recurring, event_at, period_start, period_end) -%}
    {{ return(adapter.dispatch('weighted_sum_agg', 'billhouse')(value, in_period, recurring, event_at, period_start, period_end)) }}
{%- endmacro %}

{% macro default__weighted_sum_agg(value, in_period, recurring, event_at, period_start, period_end) -%}
    {%- set period_seconds = billhouse.seconds_between(period_start, period_end) -%}
    {{ billhouse.to_decimal(
        '(coalesce(sum(case when ' ~ in_period ~ ' = 0 and ' ~ recurring ~ ' then ' ~ value ~ ' end), 0) * max('
        ~ period_seconds ~ ') + coalesce(sum(case when ' ~ in_period ~ ' = 1 then ' ~ value ~ ' * '
        ~ billhouse.seconds_between(event_at, period_end) ~ ' end), 0)) / max(' ~ period_seconds ~ ')'
    ) }}
{%- endmacro %}
