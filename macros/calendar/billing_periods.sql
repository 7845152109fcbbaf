{#-
    The billing clock's period arithmetic on local calendar dates, shared by
    int_subscription_periods / int_billing_periods (the periods of a close's window) and
    int_pay_in_advance_periods (the period holding an event's date): one definition, so
    both always cut the same periods. Arguments are SQL expressions.
-#}

{#- Months per plan interval; 0 = weekly (periods of 7 days). -#}
{% macro plan_interval_months(plan_interval) -%}
    case {{ plan_interval }}
        when 'weekly' then 0
        when 'monthly' then 1
        when 'quarterly' then 3
        when 'semiannual' then 6
        else 12
    end
{%- endmacro %}


{#- One row per subscription replaced by a plan change: when its first successor (a
    subscription naming it as previous_subscription_id) starts. subscription_end_date
    reads it. -#}
{% macro subscription_successors(subscriptions) -%}
    select
        previous_subscription_id as external_subscription_id,
        min(subscription_at) as successor_at,
        1 as has_successor
    from {{ subscriptions }}
    where previous_subscription_id is not null
    group by previous_subscription_id
{%- endmacro %}


{#- The local date a subscription stops being billed (exclusive), null while it runs: the
    day its successor starts (plan change), else the day after its termination day. -#}
{% macro subscription_end_date(has_successor, successor_at, terminated_at, ending_at, timezone) -%}
    case
        when coalesce({{ has_successor }}, 0) = 1
            then {{ billhouse.local_date(successor_at, timezone) }}
        when coalesce({{ terminated_at }}, {{ ending_at }}) is not null
            then {{ billhouse.date_add_days(
                billhouse.local_date('coalesce(' ~ terminated_at ~ ', ' ~ ending_at ~ ')', timezone), 1) }}
    end
{%- endmacro %}


{#- Period 0 starts here: the subscription's start date (anniversary) or the calendar
    period holding it (calendar). -#}
{% macro period_anchor_date(billing_time, start_date, plan_interval) -%}
    case
        when {{ billing_time }} = 'anniversary' then {{ start_date }}
        else {{ billhouse.calendar_period_start(start_date, plan_interval) }}
    end
{%- endmacro %}


{#- The start date of period ``period_index`` (its end is the start of the next one). -#}
{% macro period_start_date(anchor_date, interval_months, period_index) -%}
    case
        when {{ interval_months }} = 0 then {{ billhouse.date_add_days(anchor_date, '7 * (' ~ period_index ~ ')') }}
        else {{ billhouse.date_add_months(anchor_date, interval_months ~ ' * (' ~ period_index ~ ')') }}
    end
{%- endmacro %}


{#- Charge slices of a period: with bill_charges_monthly, a quarterly, semiannual or
    yearly period's usage is billed over monthly slices; otherwise one slice. -#}
{% macro charge_slice_indexes(bill_charges_monthly, plan_interval) -%}
    {{ billhouse.integer_range_column(0,
        "case when " ~ bill_charges_monthly ~ " then case " ~ plan_interval
        ~ " when 'quarterly' then 2 when 'semiannual' then 5 when 'yearly' then 11 else 0 end else 0 end") }}
{%- endmacro %}

{% macro charge_slice_start_date(bill_charges_monthly, plan_interval, full_start_date, billed_start_date, slice_index) -%}
    case
        when {{ bill_charges_monthly }} and {{ plan_interval }} in ('quarterly', 'semiannual', 'yearly')
            then greatest({{ billed_start_date }}, {{ billhouse.date_add_months(full_start_date, slice_index) }})
        else {{ billed_start_date }}
    end
{%- endmacro %}

{% macro charge_slice_end_date(bill_charges_monthly, plan_interval, full_start_date, billed_end_date, slice_index) -%}
    case
        when {{ bill_charges_monthly }} and {{ plan_interval }} in ('quarterly', 'semiannual', 'yearly')
            then least({{ billed_end_date }}, {{ billhouse.date_add_months(full_start_date, slice_index ~ ' + 1') }})
        else {{ billed_end_date }}
    end
{%- endmacro %}
