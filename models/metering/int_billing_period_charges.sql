{#- One row per closed billing period and usage charge of its plan, with what the event
    pass needs of the charge and its metric. A small table (periods × charges): the
    event pass joins the events to it, so the join's hash table is built from this
    side, never from the events.

    rated_by_bucket: the charge's units of this period are summed from per-bucket
    aggregates of the events (int_charge_events_aggregated), without joining each event
    to its period. A bucket is the span between two consecutive bounds of the close's
    periods, so every bucket lies wholly inside or wholly outside a period. It takes a
    charge with no filters, no grouped_by and a count, sum or max of the period's own
    events (not recurring; not the percentage model, which prices each event), whose
    period starts and ends on one of the close's most common bounds (at most
    max_bucket_bounds: each bound costs every event a comparison). The others are
    joined event by event (int_charge_events_assigned). -#}
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
),

eligible as (
    select
        final.*,
        case
            when final.filter_count = 0
                and final.grouped_by = '[]'
                and not final.recurring
                and final.aggregation_type in ('count_agg', 'sum_agg', 'max_agg')
                and final.charge_model <> 'percentage'
            then true
            else false
        end as bucket_eligible
    from final
),

candidate_bounds as (
    select period_start as bound from eligible where bucket_eligible
    union all
    select period_end as bound from eligible where bucket_eligible
),

bucket_bounds as (
    select bound from candidate_bounds
    group by bound
    order by count(*) desc, bound
    limit {{ var('max_bucket_bounds') }}
),

rated as (
    select
        eligible.*,
        case
            when eligible.bucket_eligible
                and eligible.period_start in (select bound from bucket_bounds)
                and eligible.period_end in (select bound from bucket_bounds)
            then true
            else false
        end as rated_by_bucket
    from eligible
)

select * from rated
