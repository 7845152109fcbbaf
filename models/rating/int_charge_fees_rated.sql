{#- One fee per usage charge and closed period: the units priced by the charge's
    charge model (one macro per model), then rounded to minor units once. -#}
with usage as (
    select * from {{ ref('int_usage_aggregated') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

priced as (
    select
        usage.period_charge_key as fee_key,
        usage.subscription_period_key as subscription_period_key,
        usage.external_subscription_id as external_subscription_id,
        usage.external_customer_id as external_customer_id,
        usage.plan_code as plan_code,
        usage.currency as currency,
        usage.period_start as period_start,
        usage.period_end as period_end,
        usage.issuing_date as issuing_date,
        usage.charge_id as charge_id,
        usage.billable_metric_code as billable_metric_code,
        charges.charge_model as charge_model,
        charges.invoice_display_name as invoice_display_name,
        usage.units as units,
        charges.amount as unit_amount,
        case charges.charge_model
            when 'standard' then {{ billhouse.standard('usage.units', 'charges.amount') }}
        end as precise_amount,
        currencies.minor_units_per_major as minor_units_per_major
    from usage
    inner join charges
        on usage.charge_id = charges.charge_id
    inner join currencies
        on usage.currency = currencies.currency
),

final as (
    select
        fee_key,
        subscription_period_key,
        external_subscription_id,
        external_customer_id,
        plan_code,
        currency,
        period_start,
        period_end,
        issuing_date,
        charge_id,
        billable_metric_code,
        charge_model,
        invoice_display_name,
        units,
        unit_amount,
        precise_amount,
        {{ billhouse.to_minor_units('precise_amount', 'minor_units_per_major') }} as amount_cents
    from priced
)

select * from final
