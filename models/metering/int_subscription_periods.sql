{#- The billing clock: one row per subscription and plan-interval period that touches
    this close's window (close_from, as_of]. Periods are built from local calendar dates
    in the customer's timezone (calendar: aligned to week/month/quarter/half-year/year
    starts; anniversary: from the subscription's start date, month ends clamped) and
    converted to UTC at local midnight. A subscription's first and last periods are cut
    to its billed days (the start day and the termination day count in full; a plan
    change ends the old subscription the day before the new one starts). -#}
{{ config(meta={'customer_timezones': ['close_timezone']}) }}
with subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

plans as (
    select * from {{ ref('stg_billhouse__plans') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

successors as (
    {{ billhouse.subscription_successors('subscriptions') }}
),

subscription_clock as (
    select
        subscriptions.external_subscription_id as external_subscription_id,
        subscriptions.external_customer_id as external_customer_id,
        customers.customer_name as customer_name,
        customers.currency as currency,
        customers.timezone as timezone,
        subscriptions.plan_code as plan_code,
        plans.plan_interval as plan_interval,
        plans.amount_cents as plan_amount_cents,
        plans.pay_in_advance as pay_in_advance,
        plans.trial_period as trial_period,
        plans.bill_charges_monthly as bill_charges_monthly,
        subscriptions.billing_time as billing_time,
        subscriptions.subscription_at as subscription_at,
        {{ billhouse.local_date('subscriptions.subscription_at', 'customers.timezone') }} as start_date,
        {{ billhouse.subscription_end_date(
            'successors.has_successor', 'successors.successor_at',
            'subscriptions.terminated_at', 'subscriptions.ending_at', 'customers.timezone') }} as end_date,
        {{ billhouse.plan_interval_months('plans.plan_interval') }} as interval_months,
        {{ billhouse.local_date(billhouse.utc_instant(billhouse.close_setting('as_of')), 'customers.timezone') }} as as_of_date,
        {{ billhouse.local_date('greatest(subscriptions.subscription_at, ' ~ billhouse.utc_instant(billhouse.close_setting('close_from')) ~ ')', 'customers.timezone') }} as close_from_date
    from subscriptions
    inner join plans
        on subscriptions.plan_code = plans.plan_code
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    left join successors
        on subscriptions.external_subscription_id = successors.external_subscription_id
    {% if billhouse.close_setting('close_timezone') %}
    where customers.timezone = '{{ billhouse.close_setting('close_timezone') }}'
    {% endif %}
),

anchored as (
    select
        subscription_clock.*,
        {{ billhouse.period_anchor_date('billing_time', 'start_date', 'plan_interval') }} as anchor_date
    from subscription_clock
),

{#- The period index holding a date, counted from the anchor (may overshoot by one for
    clamped anniversaries; the range below is widened and rows are filtered exactly). -#}
indexed as (
    select
        anchored.*,
        case
            when interval_months = 0 then floor({{ billhouse.days_between('anchor_date', 'close_from_date') }} / 7)
            else floor({{ billhouse.months_between('anchor_date', 'close_from_date') }} / interval_months)
        end - 2 as low_index,
        case
            when interval_months = 0 then floor({{ billhouse.days_between('anchor_date', 'as_of_date') }} / 7)
            else floor({{ billhouse.months_between('anchor_date', 'as_of_date') }} / interval_months)
        end + 2 as high_index
    from anchored
),

expanded as (
    select
        indexed.*,
        {{ billhouse.integer_range_column('greatest(low_index, 0)', 'high_index') }} as period_index
    from indexed
    where high_index >= 0
),

bounded as (
    select
        expanded.*,
        {{ billhouse.period_start_date('anchor_date', 'interval_months', 'period_index') }} as full_start_date,
        {{ billhouse.period_start_date('anchor_date', 'interval_months', 'period_index + 1') }} as full_end_date
    from expanded
),

billed as (
    select
        bounded.*,
        greatest(full_start_date, start_date) as billed_start_date,
        case
            when end_date is not null and end_date < full_end_date then end_date
            else full_end_date
        end as billed_end_date,
        {{ billhouse.date_add_days('start_date', 'trial_period') }} as trial_end_date
    from bounded
    where full_end_date > start_date
        and (end_date is null or full_start_date < end_date)
),

timed as (
    select
        billed.*,
        {{ billhouse.local_midnight('billed_start_date', 'timezone') }} as period_start,
        {{ billhouse.local_midnight('billed_end_date', 'timezone') }} as period_end,
        {{ billhouse.local_midnight('full_start_date', 'timezone') }} as full_period_start,
        {{ billhouse.local_midnight('full_end_date', 'timezone') }} as full_period_end,
        {{ billhouse.days_between('full_start_date', 'full_end_date') }} as period_days,
        {{ billhouse.days_between('billed_start_date', 'billed_end_date') }} as billed_days,
        greatest(
            {{ billhouse.days_between('greatest(billed_start_date, trial_end_date)', 'billed_end_date') }}, 0
        ) as chargeable_days,
        -- pay in advance: issued at the period's first local midnight, or for a
        -- subscription starting later that day, at the next one
        case
            when not pay_in_advance then billed_end_date
            when billed_start_date = start_date
                and subscription_at > {{ billhouse.local_midnight('start_date', 'timezone') }}
                then {{ billhouse.date_add_days('start_date', 1) }}
            else billed_start_date
        end as subscription_fee_issuing_date
    from billed
    where billed_start_date < billed_end_date
),

final as (
    select
        concat(
            external_subscription_id, '/',
            cast(billed_start_date as {{ dbt.type_string() }})
        ) as subscription_period_key,
        external_subscription_id,
        external_customer_id,
        customer_name,
        plan_code,
        plan_interval,
        plan_amount_cents,
        pay_in_advance,
        trial_period,
        bill_charges_monthly,
        billing_time,
        currency,
        timezone,
        cast(period_index as {{ dbt.type_int() }}) as period_index,
        full_start_date,
        full_end_date,
        billed_start_date,
        billed_end_date,
        trial_end_date,
        full_period_start,
        full_period_end,
        period_start,
        period_end,
        cast(period_days as {{ dbt.type_int() }}) as period_days,
        cast(billed_days as {{ dbt.type_int() }}) as billed_days,
        cast(chargeable_days as {{ dbt.type_int() }}) as chargeable_days,
        subscription_fee_issuing_date,
        {{ billhouse.local_midnight('subscription_fee_issuing_date', 'timezone') }} as subscription_fee_closes_at
    from timed
    where period_start <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
        and period_end > {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }}
)

select * from final
