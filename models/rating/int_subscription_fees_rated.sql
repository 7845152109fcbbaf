{#- One subscription fee per closed period: the plan's amount, billed in arrears. -#}
with periods as (
    select * from {{ ref('int_billing_periods') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

final as (
    select
        concat(periods.subscription_period_key, '/subscription') as fee_key,
        periods.subscription_period_key as subscription_period_key,
        periods.external_subscription_id as external_subscription_id,
        periods.external_customer_id as external_customer_id,
        periods.plan_code as plan_code,
        periods.currency as currency,
        periods.period_start as period_start,
        periods.period_end as period_end,
        periods.issuing_date as issuing_date,
        {{ billhouse.to_decimal('1') }} as units,
        {{ billhouse.to_decimal('periods.plan_amount_cents') }} / currencies.minor_units_per_major as unit_amount,
        {{ billhouse.to_decimal('periods.plan_amount_cents') }} / currencies.minor_units_per_major as precise_amount,
        periods.plan_amount_cents as amount_cents
    from periods
    inner join currencies
        on periods.currency = currencies.currency
)

select * from final
