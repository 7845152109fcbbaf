{#- One row per closed billing period and usage charge of its plan, with what the event
    pass needs of the charge and its metric. A small table (periods × charges): the
    event pass joins the events to it, so the join's hash table is built from this
    side, never from the events. -#}
with periods as (
    select * from {{ ref('int_billing_periods') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

final as (
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
        charges.charge_model as charge_model,
        charges.grouped_by as grouped_by,
        charges.filter_count as filter_count,
        metrics.aggregation_type as aggregation_type,
        metrics.field_name as field_name,
        metrics.recurring as recurring,
        metrics.rounding_function as rounding_function,
        metrics.rounding_precision as rounding_precision
    from periods
    inner join charges
        on periods.plan_code = charges.plan_code
    inner join metrics
        on charges.billable_metric_code = metrics.billable_metric_code
)

select * from final
