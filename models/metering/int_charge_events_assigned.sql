{#-
    Every deduplicated event that a usage charge of a closed period prices, with the
    bucket it falls in: the charge filter it matches (the first filter all of whose keys
    match; -1 = the charge's default properties) and its group ('' without grouped_by).
    Recurring metrics also carry the events before the period (in_period = 0), whose
    values carry over.
-#}
with periods as (
    select * from {{ ref('int_billing_periods') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

filter_values as (
    select * from {{ ref('stg_billhouse__charge_filter_values') }}
),

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

period_charges as (
    select
        periods.subscription_period_key as subscription_period_key,
        periods.external_subscription_id as external_subscription_id,
        periods.period_start as period_start,
        periods.period_end as period_end,
        charges.charge_id as charge_id,
        charges.billable_metric_code as billable_metric_code,
        charges.grouped_by as grouped_by,
        charges.filter_count as filter_count,
        metrics.aggregation_type as aggregation_type,
        metrics.field_name as field_name,
        metrics.recurring as recurring
    from periods
    inner join charges
        on periods.plan_code = charges.plan_code
    inner join metrics
        on charges.billable_metric_code = metrics.billable_metric_code
),

charge_events as (
    select
        period_charges.subscription_period_key as subscription_period_key,
        period_charges.charge_id as charge_id,
        period_charges.billable_metric_code as billable_metric_code,
        period_charges.aggregation_type as aggregation_type,
        period_charges.field_name as field_name,
        period_charges.grouped_by as grouped_by,
        period_charges.filter_count as filter_count,
        period_charges.period_start as period_start,
        events.transaction_id as transaction_id,
        events.event_at as event_at,
        events.ingested_at as ingested_at,
        events.properties as properties
    from period_charges
    inner join events
        on period_charges.external_subscription_id = events.external_subscription_id
        and period_charges.billable_metric_code = events.billable_metric_code
    where events.event_at < period_charges.period_end
        and (period_charges.recurring or events.event_at >= period_charges.period_start)
),

filter_key_counts as (
    select
        charge_id,
        filter_index,
        count(distinct property_key) as key_count
    from filter_values
    group by charge_id, filter_index
),

filter_matches as (
    select
        charge_events.subscription_period_key as subscription_period_key,
        charge_events.charge_id as charge_id,
        charge_events.transaction_id as transaction_id,
        filter_values.filter_index as filter_index,
        count(distinct filter_values.property_key) as matched_keys
    from charge_events
    inner join filter_values
        on charge_events.charge_id = filter_values.charge_id
    where charge_events.filter_count > 0
        and {{ billhouse.property_text('charge_events.properties', 'filter_values.property_key') }}
            = filter_values.accepted_value
    group by
        charge_events.subscription_period_key,
        charge_events.charge_id,
        charge_events.transaction_id,
        filter_values.filter_index
),

first_matching_filter as (
    select
        filter_matches.subscription_period_key as subscription_period_key,
        filter_matches.charge_id as charge_id,
        filter_matches.transaction_id as transaction_id,
        min(filter_matches.filter_index) as filter_index
    from filter_matches
    inner join filter_key_counts
        on filter_matches.charge_id = filter_key_counts.charge_id
        and filter_matches.filter_index = filter_key_counts.filter_index
    where filter_matches.matched_keys = filter_key_counts.key_count
    group by
        filter_matches.subscription_period_key,
        filter_matches.charge_id,
        filter_matches.transaction_id
),

final as (
    select
        charge_events.subscription_period_key as subscription_period_key,
        charge_events.charge_id as charge_id,
        coalesce(first_matching_filter.filter_index, -1) as filter_index,
        {{ billhouse.group_key('charge_events.properties', 'charge_events.grouped_by') }} as group_key,
        charge_events.transaction_id as transaction_id,
        charge_events.event_at as event_at,
        charge_events.ingested_at as ingested_at,
        case when charge_events.event_at >= charge_events.period_start then 1 else 0 end as in_period,
        case charge_events.aggregation_type
            when 'count_agg' then {{ billhouse.to_decimal('1') }}
            when 'custom_agg' then {{ billhouse.custom_expression_case('charge_events.billable_metric_code') }}
            else {{ billhouse.property_decimal('charge_events.properties', 'charge_events.field_name') }}
        end as event_value,
        case
            when charge_events.aggregation_type = 'unique_count_agg'
            then {{ billhouse.property_text('charge_events.properties', 'charge_events.field_name') }}
        end as distinct_value,
        case
            when {{ billhouse.property_text('charge_events.properties', "'operation_type'") }} = 'remove' then 'remove'
            else 'add'
        end as operation_type
    from charge_events
    left join first_matching_filter
        on charge_events.subscription_period_key = first_matching_filter.subscription_period_key
        and charge_events.charge_id = first_matching_filter.charge_id
        and charge_events.transaction_id = first_matching_filter.transaction_id
)

select * from final
