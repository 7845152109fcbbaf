{#- The closed billing periods: every period of every subscription that ended at or
    before var('as_of'). Monthly calendar periods in UTC for now. -#}
with subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

plans as (
    select * from {{ ref('stg_billhouse__plans') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

period_indexes as (
    {{ billhouse.integer_series(600) }}
),

candidate_periods as (
    select
        subscriptions.external_subscription_id as external_subscription_id,
        subscriptions.external_customer_id as external_customer_id,
        subscriptions.plan_code as plan_code,
        subscriptions.subscription_at as subscription_at,
        coalesce(subscriptions.terminated_at, subscriptions.ending_at) as ended_at,
        period_indexes.n as period_index,
        {{ billhouse.add_months(billhouse.month_start('subscriptions.subscription_at'), 'period_indexes.n') }} as period_start,
        {{ billhouse.add_months(billhouse.month_start('subscriptions.subscription_at'), 'period_indexes.n + 1') }} as period_end
    from subscriptions
    cross join period_indexes
),

closed_periods as (
    select
        candidate_periods.external_subscription_id as external_subscription_id,
        candidate_periods.external_customer_id as external_customer_id,
        candidate_periods.plan_code as plan_code,
        candidate_periods.period_index as period_index,
        candidate_periods.period_start as period_start,
        candidate_periods.period_end as period_end,
        plans.plan_interval as plan_interval,
        plans.amount_cents as plan_amount_cents,
        customers.currency as currency,
        customers.timezone as timezone,
        customers.customer_name as customer_name
    from candidate_periods
    inner join plans
        on candidate_periods.plan_code = plans.plan_code
    inner join customers
        on candidate_periods.external_customer_id = customers.external_customer_id
    where candidate_periods.period_end <= {{ billhouse.utc_instant(var('as_of')) }}
        and (
            candidate_periods.ended_at is null
            or candidate_periods.period_start < candidate_periods.ended_at
        )
),

final as (
    select
        concat(
            external_subscription_id, '/',
            cast({{ billhouse.utc_date('period_start') }} as {{ dbt.type_string() }})
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
        period_start,
        period_end,
        {{ billhouse.utc_date('period_end') }} as issuing_date
    from closed_periods
)

select * from final
