{#- The usage periods rated by this close: one row per subscription and charge period
    that ends in the window (close_from, as_of] — the plan-interval period, or its
    monthly slices when a plan bills charges monthly (`bill_charges_monthly`) — plus
    already-invoiced periods that received late events (`is_late` = true), re-rated so
    that the difference is billed as an adjustment. -#}
{{ config(meta={'customer_timezones': ['close_timezone']}) }}
with subscription_periods as (
    select * from {{ ref('int_subscription_periods') }}
),

late_periods as (
    select * from {{ ref('int_late_usage_periods') }}
),

sliced as (
    select
        subscription_periods.*,
        {{ billhouse.charge_slice_indexes('bill_charges_monthly', 'plan_interval') }} as slice_index
    from subscription_periods
),

slice_dates as (
    select
        sliced.*,
        {{ billhouse.charge_slice_start_date(
            'bill_charges_monthly', 'plan_interval', 'full_start_date', 'billed_start_date', 'slice_index') }}
            as charge_start_date,
        {{ billhouse.charge_slice_end_date(
            'bill_charges_monthly', 'plan_interval', 'full_start_date', 'billed_end_date', 'slice_index') }}
            as charge_end_date
    from sliced
),

closing as (
    select
        concat(
            external_subscription_id, '/',
            cast(charge_start_date as {{ dbt.type_string() }})
        ) as subscription_period_key,
        external_subscription_id,
        external_customer_id,
        customer_name,
        plan_code,
        plan_interval,
        plan_amount_cents,
        currency,
        timezone,
        period_index,
        {{ billhouse.local_midnight('charge_start_date', 'timezone') }} as period_start,
        {{ billhouse.local_midnight('charge_end_date', 'timezone') }} as period_end,
        charge_end_date as issuing_date
    from slice_dates
    where charge_start_date < charge_end_date
),

closing_in_window as (
    select * from closing
    where period_end > {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }}
        and period_end <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

final as (
    select
        closing_in_window.*,
        true as closes_in_window,
        subscription_period_key in (select subscription_period_key from late_periods) as is_late
    from closing_in_window

    union all

    select
        late_periods.subscription_period_key as subscription_period_key,
        late_periods.external_subscription_id as external_subscription_id,
        late_periods.external_customer_id as external_customer_id,
        late_periods.customer_name as customer_name,
        late_periods.plan_code as plan_code,
        late_periods.plan_interval as plan_interval,
        late_periods.plan_amount_cents as plan_amount_cents,
        late_periods.currency as currency,
        late_periods.timezone as timezone,
        late_periods.period_index as period_index,
        late_periods.period_start as period_start,
        late_periods.period_end as period_end,
        late_periods.issuing_date as issuing_date,
        false as closes_in_window,
        true as is_late
    from late_periods
    where late_periods.subscription_period_key not in (
        select subscription_period_key from closing_in_window
    )
)

select * from final
