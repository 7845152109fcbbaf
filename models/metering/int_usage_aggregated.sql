{#- Units of every usage charge in every closed period: the charge's billable metric
    aggregated over the period's deduplicated events. Charges with no events get 0. -#}
with periods as (
    select * from {{ ref('int_billing_periods') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

period_charges as (
    select
        concat(periods.subscription_period_key, '/', charges.charge_id) as period_charge_key,
        periods.subscription_period_key as subscription_period_key,
        periods.external_subscription_id as external_subscription_id,
        periods.external_customer_id as external_customer_id,
        periods.plan_code as plan_code,
        periods.currency as currency,
        periods.period_start as period_start,
        periods.period_end as period_end,
        periods.issuing_date as issuing_date,
        charges.charge_id as charge_id,
        charges.billable_metric_code as billable_metric_code,
        metrics.aggregation_type as aggregation_type,
        metrics.field_name as field_name
    from periods
    inner join charges
        on periods.plan_code = charges.plan_code
    inner join metrics
        on charges.billable_metric_code = metrics.billable_metric_code
),

period_events as (
    select
        period_charges.period_charge_key as period_charge_key,
        period_charges.aggregation_type as aggregation_type,
        events.transaction_id as transaction_id,
        {{ billhouse.property_decimal('events.properties', 'period_charges.field_name') }} as field_value
    from period_charges
    inner join events
        on period_charges.external_subscription_id = events.external_subscription_id
        and period_charges.billable_metric_code = events.billable_metric_code
    where events.event_at >= period_charges.period_start
        and events.event_at < period_charges.period_end
),

aggregated as (
    select
        period_charge_key,
        count(transaction_id) as event_count,
        case min(aggregation_type)
            when 'count_agg' then {{ billhouse.count_agg('transaction_id') }}
            when 'sum_agg' then {{ billhouse.sum_agg('field_value') }}
        end as aggregated_units
    from period_events
    group by period_charge_key
),

final as (
    select
        period_charges.period_charge_key as period_charge_key,
        period_charges.subscription_period_key as subscription_period_key,
        period_charges.external_subscription_id as external_subscription_id,
        period_charges.external_customer_id as external_customer_id,
        period_charges.plan_code as plan_code,
        period_charges.currency as currency,
        period_charges.period_start as period_start,
        period_charges.period_end as period_end,
        period_charges.issuing_date as issuing_date,
        period_charges.charge_id as charge_id,
        period_charges.billable_metric_code as billable_metric_code,
        period_charges.aggregation_type as aggregation_type,
        coalesce(aggregated.event_count, 0) as event_count,
        -- a negative aggregate bills nothing (semantics.md)
        case
            when coalesce(aggregated.aggregated_units, 0) < 0 then {{ billhouse.to_decimal('0') }}
            else {{ billhouse.to_decimal('coalesce(aggregated.aggregated_units, 0)') }}
        end as units
    from period_charges
    left join aggregated
        on period_charges.period_charge_key = aggregated.period_charge_key
)

select * from final
