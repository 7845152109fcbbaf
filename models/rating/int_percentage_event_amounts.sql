{#- One row per event of a percentage charge in a closed period, in time order within its
    bucket: the running total, whether it is free, and what it costs (macro percentage). -#}
{#- built empty without a percentage charge (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.catalog_has_charges("charge_model = 'percentage'")) %}
with percentage_charges as (
    select charge_id, billable_metric_code from {{ ref('stg_billhouse__charges') }}
    where charge_model = 'percentage'
),

assigned as (
    -- the events of percentage charges only; the metric code, a column of the events,
    -- lets the view's scan skip every other event
    select * from {{ ref('int_charge_events_assigned') }}
    where in_period = 1
        and billable_metric_code in (select billable_metric_code from percentage_charges)
        and charge_id in (select charge_id from percentage_charges)
),

usage as (
    select * from {{ ref('int_usage_aggregated') }}
    where charge_model = 'percentage'
),

prices as (
    select * from {{ ref('stg_billhouse__charge_prices') }}
),

bucket_events as (
    select
        usage.bucket_key as bucket_key,
        assigned.transaction_id as transaction_id,
        assigned.event_at as event_at,
        coalesce(assigned.event_value, 0) as event_value,
        prices.rate as rate,
        prices.fixed_amount as fixed_amount,
        prices.free_units_per_events as free_units_per_events,
        prices.free_units_per_total_aggregation as free_units_per_total_aggregation,
        prices.per_transaction_min_amount as per_transaction_min_amount,
        prices.per_transaction_max_amount as per_transaction_max_amount,
        row_number() over (
            partition by usage.bucket_key
            order by assigned.event_at, assigned.ingested_at, assigned.transaction_id
        ) as event_number,
        sum(coalesce(assigned.event_value, 0)) over (
            partition by usage.bucket_key
            order by assigned.event_at, assigned.ingested_at, assigned.transaction_id
            rows between unbounded preceding and current row
        ) as running_total
    from assigned
    inner join usage
        on assigned.subscription_period_key = usage.subscription_period_key
        and assigned.charge_id = usage.charge_id
        and assigned.filter_index = usage.filter_index
        and assigned.group_key = usage.group_key
    inner join prices
        on usage.charge_price_id = prices.charge_price_id
),

with_allowance as (
    select
        bucket_events.*,
        {{ billhouse.percentage_first_reaching_event(
            'event_number', 'running_total', 'free_units_per_total_aggregation', 'bucket_key') }}
            as first_reaching_amount
    from bucket_events
),

paid as (
    select
        with_allowance.*,
        {{ billhouse.percentage_paid_value(
            'event_value', 'event_number', 'running_total', 'first_reaching_amount',
            'free_units_per_events', 'free_units_per_total_aggregation') }} as paid_value
    from with_allowance
),

final as (
    select
        concat(bucket_key, '/', transaction_id) as event_amount_key,
        bucket_key,
        transaction_id,
        event_at,
        event_number,
        event_value,
        running_total,
        paid_value,
        case when paid_value is null then 1 else 0 end as is_free,
        {{ billhouse.percentage('paid_value', 'rate', 'fixed_amount', 'per_transaction_min_amount', 'per_transaction_max_amount') }}
            as event_amount
    from paid
)

select * from final
{% endcall %}
