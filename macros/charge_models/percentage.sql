{#-
    percentage, per event in time order (k = 1, 2, ... with running total S_k):
      * free allowance: the first N events (free_units_per_events) and/or the units while
        the running total stays below A (free_units_per_total_aggregation), closing at
        whichever is reached first; c_A = the first k with S_k >= A.
      * event k is free if k <= N (or N unset) and k < c_A; the event k = c_A (within N)
        pays S_k - A; every later event pays its whole value.
      * a paid event costs rate% x paid value + fixed_amount, clamped to
        [per_transaction_min_amount, per_transaction_max_amount]; the fee is the sum,
        never below 0.
    `percentage_paid_value` gives the paid value (null for a free event).
-#}
{#- c_A: the number of the bucket's first event whose running total reaches the free
    amount A (null when none does, or without a free amount). A window expression. -#}
{% macro percentage_first_reaching_event(event_number, running_total, free_amount, bucket) -%}
    min(
        case
            when {{ free_amount }} is not null
                and {{ running_total }} >= {{ free_amount }}
            then {{ event_number }}
        end
    ) over (partition by {{ bucket }})
{%- endmacro %}

{% macro percentage_paid_value(event_value, event_number, running_total, first_reaching_amount, free_events, free_amount) -%}
    {{ return(adapter.dispatch('percentage_paid_value', 'billhouse')(event_value, event_number, running_total, first_reaching_amount, free_events, free_amount)) }}
{%- endmacro %}

{% macro default__percentage_paid_value(event_value, event_number, running_total, first_reaching_amount, free_events, free_amount) -%}
    case
        when {{ free_events }} is not null and {{ event_number }} > {{ free_events }} then {{ event_value }}
        when {{ free_amount }} is null then
            case when {{ free_events }} is null then {{ event_value }} end
        when {{ first_reaching_amount }} is null or {{ event_number }} < {{ first_reaching_amount }} then null
        when {{ event_number }} = {{ first_reaching_amount }} then {{ running_total }} - {{ free_amount }}
        else {{ event_value }}
    end
{%- endmacro %}


{% macro percentage(paid_value, rate, fixed_amount, per_transaction_min_amount, per_transaction_max_amount) -%}
    {{ return(adapter.dispatch('percentage', 'billhouse')(paid_value, rate, fixed_amount, per_transaction_min_amount, per_transaction_max_amount)) }}
{%- endmacro %}

{% macro default__percentage(paid_value, rate, fixed_amount, per_transaction_min_amount, per_transaction_max_amount) -%}
    {%- set raw -%}
        {{ billhouse.to_decimal(paid_value ~ ' * ' ~ rate ~ ' / 100 + coalesce(' ~ fixed_amount ~ ', 0)') }}
    {%- endset -%}
    {%- set floored -%}
        case when {{ per_transaction_min_amount }} is not null and {{ raw }} < {{ per_transaction_min_amount }}
            then {{ per_transaction_min_amount }} else {{ raw }} end
    {%- endset -%}
    {{ billhouse.to_decimal(
        'case when ' ~ paid_value ~ ' is null then ' ~ billhouse.decimal_zero() ~ ' when ' ~ per_transaction_max_amount ~ ' is not null and ('
        ~ floored ~ ') > ' ~ per_transaction_max_amount ~ ' then ' ~ per_transaction_max_amount ~ ' else ' ~ floored ~ ' end'
    ) }}
{%- endmacro %}
