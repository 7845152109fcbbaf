{#-
    Units of every usage-charge bucket of every closed period: one row per subscription
    period, charge, filter (-1 = default properties) and group. Every filter of every
    charge gets a row even without events; a grouped charge without events gets one
    row with group_key ''. Aggregations are one macro each (macros/aggregations/);
    rounding_function applies to the aggregated units; a negative aggregate bills 0.
    The unique counts, which rank events by a window, are left out when no charge of the
    catalog prices a unique_count_agg metric (catalog_features).
-#}
{%- set unique_counted = 'unique_count_agg' in billhouse.catalog_features()['aggregation_types'] %}
with prices as (
    select * from {{ ref('stg_billhouse__charge_prices') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

assigned as (
    select * from {{ ref('int_charge_events_assigned') }}
),

period_charges as (
    select * from {{ ref('int_billing_period_charges') }}
),

event_aggregates as (
    select * from {{ ref('int_charge_events_aggregated') }}
),

{%- if unique_counted %}

unique_count_metrics as (
    select billable_metric_code from metrics where aggregation_type = 'unique_count_agg'
),

distinct_values as (
    {#- one row per bucket and distinct value, for unique_count_agg -#}
    select
        subscription_period_key,
        charge_id,
        filter_index,
        group_key,
        distinct_value,
        max(case when in_period = 1 and operation_type = 'add' then 1 else 0 end) as added_in_period,
        {#- active at the start: the last operation before the period was an add -#}
        max(case when in_period = 0 and is_last_before_start = 1 and operation_type = 'add' then 1 else 0 end)
            as active_at_start
    from (
        select
            assigned.*,
            case
                when in_period = 0
                    and row_number() over (
                        partition by subscription_period_key, charge_id, filter_index, group_key, distinct_value, in_period
                        order by event_at desc, ingested_at desc, transaction_id desc
                    ) = 1
                then 1 else 0
            end as is_last_before_start
        from assigned
        where distinct_value is not null
            -- by metric code, a column of the events: the view's scan skips every other event
            and billable_metric_code in (select billable_metric_code from unique_count_metrics)
    ) as ranked
    group by subscription_period_key, charge_id, filter_index, group_key, distinct_value
),

unique_counts as (
    select
        distinct_values.subscription_period_key as subscription_period_key,
        distinct_values.charge_id as charge_id,
        distinct_values.filter_index as filter_index,
        distinct_values.group_key as group_key,
        {{ billhouse.unique_count_agg('distinct_values.active_at_start', 'distinct_values.added_in_period', 'period_charges.recurring') }}
            as unique_count
    from distinct_values
    inner join period_charges
        on distinct_values.subscription_period_key = period_charges.subscription_period_key
        and distinct_values.charge_id = period_charges.charge_id
    group by
        distinct_values.subscription_period_key,
        distinct_values.charge_id,
        distinct_values.filter_index,
        distinct_values.group_key
),
{%- endif %}

aggregated as (
    {#- every price (filter) of every charge of every closed period, with each group its
        events fell in, or one row (group '') when none did -#}
    select
        period_charges.subscription_period_key as subscription_period_key,
        period_charges.charge_id as charge_id,
        prices.filter_index as filter_index,
        coalesce(event_aggregates.group_key, '') as group_key,
        period_charges.external_subscription_id as external_subscription_id,
        period_charges.external_customer_id as external_customer_id,
        period_charges.plan_code as plan_code,
        period_charges.currency as currency,
        period_charges.period_start as period_start,
        period_charges.period_end as period_end,
        period_charges.issuing_date as issuing_date,
        period_charges.billable_metric_code as billable_metric_code,
        period_charges.charge_model as charge_model,
        period_charges.aggregation_type as aggregation_type,
        period_charges.rounding_function as rounding_function,
        period_charges.rounding_precision as rounding_precision,
        coalesce(event_aggregates.event_count, 0) as event_count,
        case period_charges.aggregation_type
            when 'count_agg' then event_aggregates.count_units
            when 'sum_agg' then event_aggregates.sum_units
            when 'max_agg' then event_aggregates.max_units
            when 'latest_agg' then event_aggregates.latest_units
            {%- if unique_counted %}
            when 'unique_count_agg' then unique_counts.unique_count
            {%- endif %}
            when 'weighted_sum_agg' then event_aggregates.weighted_sum_units
            when 'custom_agg' then event_aggregates.custom_units
        end as aggregated_units
    from period_charges
    inner join prices
        on period_charges.charge_id = prices.charge_id
    left join event_aggregates
        on period_charges.subscription_period_key = event_aggregates.subscription_period_key
        and period_charges.charge_id = event_aggregates.charge_id
        and prices.filter_index = event_aggregates.filter_index
    {%- if unique_counted %}
    left join unique_counts
        on period_charges.subscription_period_key = unique_counts.subscription_period_key
        and period_charges.charge_id = unique_counts.charge_id
        and prices.filter_index = unique_counts.filter_index
        and coalesce(event_aggregates.group_key, '') = unique_counts.group_key
    {%- endif %}
),

rounded as (
    select
        aggregated.*,
        {{ billhouse.to_decimal(billhouse.apply_rounding(
            billhouse.to_decimal('coalesce(aggregated_units, 0)'), 'rounding_function', 'rounding_precision'
        )) }} as rounded_units
    from aggregated
),

final as (
    select
        concat(
            subscription_period_key, '/', charge_id, '#', cast(filter_index as {{ dbt.type_string() }}),
            case when group_key = '' then '' else concat('/', group_key) end
        ) as bucket_key,
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
        concat(charge_id, '#', cast(filter_index as {{ dbt.type_string() }})) as charge_price_id,
        group_key,
        billable_metric_code,
        charge_model,
        aggregation_type,
        event_count,
        -- a negative aggregate bills nothing (semantics.md)
        case
            when rounded_units < 0 then {{ billhouse.to_decimal('0') }}
            else rounded_units
        end as units
    from rounded
)

select * from final
