{#- One fee per usage-charge bucket (subscription period, charge, filter, group): the
    units priced by the charge model (one macro per model in macros/charge_models/),
    rounded half-up to minor units once (macro to_minor_units). -#}
with usage as (
    select * from {{ ref('int_usage_aggregated') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

prices as (
    select * from {{ ref('stg_billhouse__charge_prices') }}
),

tiers as (
    select * from {{ ref('int_charge_fee_tiers') }}
),

percentage_events as (
    select * from {{ ref('int_percentage_event_amounts') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

tiered_amounts as (
    select
        bucket_key,
        sum(tier_amount) as amount
    from tiers
    group by bucket_key
),

percentage_amounts as (
    select
        bucket_key,
        sum(event_amount) as amount,
        sum(is_free) as free_events
    from percentage_events
    group by bucket_key
),

priced as (
    -- ClickHouse evaluates every CASE branch, so other models' null properties are coalesced
    select
        usage.bucket_key as fee_key,
        usage.subscription_period_key as subscription_period_key,
        usage.external_subscription_id as external_subscription_id,
        usage.external_customer_id as external_customer_id,
        usage.plan_code as plan_code,
        usage.currency as currency,
        usage.period_start as period_start,
        usage.period_end as period_end,
        usage.issuing_date as issuing_date,
        usage.charge_id as charge_id,
        usage.filter_index as filter_index,
        usage.group_key as group_key,
        usage.billable_metric_code as billable_metric_code,
        usage.charge_model as charge_model,
        usage.event_count as event_count,
        prices.invoice_display_name as invoice_display_name,
        usage.units as units,
        {{ billhouse.to_decimal('coalesce(prices.amount, 0)') }} as standard_amount,
        cast(case usage.charge_model
            when 'standard' then {{ billhouse.standard('usage.units', 'coalesce(prices.amount, 0)') }}
            when 'package' then {{ billhouse.package(
                'usage.units', 'coalesce(prices.amount, 0)', 'coalesce(prices.package_size, 1)', 'prices.free_units') }}
            when 'percentage' then {{ billhouse.to_decimal('greatest(coalesce(percentage_amounts.amount, 0), ' ~ billhouse.decimal_zero() ~ ')') }}
            else {{ billhouse.to_decimal('coalesce(tiered_amounts.amount, 0)') }}
        end as {{ billhouse.decimal_type() }}) as precise_amount,
        currencies.minor_units_per_major as minor_units_per_major
    from usage
    inner join prices
        on usage.charge_price_id = prices.charge_price_id
    inner join currencies
        on usage.currency = currencies.currency
    left join tiered_amounts
        on usage.bucket_key = tiered_amounts.bucket_key
    left join percentage_amounts
        on usage.bucket_key = percentage_amounts.bucket_key
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
        filter_index,
        group_key,
        billable_metric_code,
        charge_model,
        event_count,
        invoice_display_name,
        units,
        -- the price of one unit: the standard model's amount, else the average (as Lago shows it)
        cast(case
            when charge_model = 'standard' then standard_amount
            when units > 0 then {{ billhouse.to_decimal('precise_amount / units') }}
            else {{ billhouse.to_decimal('0') }}
        end as {{ billhouse.decimal_type() }}) as unit_amount,
        precise_amount,
        {{ billhouse.to_minor_units('precise_amount', 'minor_units_per_major') }} as amount_cents
    from priced
)

select * from final
