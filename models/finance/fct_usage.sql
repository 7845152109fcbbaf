{{ config(tags=['finance']) }}
{#-
    Usage per customer, billable metric and UTC day, from the deduplicated events. units
    applies the metric's aggregation within the day: count_agg counts events; sum_agg
    and weighted_sum_agg sum the field (no time weighting); max_agg takes the maximum;
    unique_count_agg counts distinct values; latest_agg takes the day's last value (by
    event time, then ingestion time and transaction id, as billing does; 0 when it has
    none); custom_agg has no per-day units (null). Days add up to a period's units only
    for count_agg and sum_agg.

    Rebuilt by every close's finance refresh over the whole store, so an event costs
    only what its metric needs: the JSON properties are parsed for the metrics that read
    a field, and the latest value is an aggregate, not a window over every event.
-#}
with events as (
    select * from {{ ref('int_events_deduplicated') }}
),

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

event_values as (
    select
        subscriptions.external_customer_id as external_customer_id,
        events.billable_metric_code as billable_metric_code,
        metrics.aggregation_type as aggregation_type,
        {{ billhouse.utc_date('events.event_at') }} as usage_date,
        events.event_at as event_at,
        events.ingested_at as ingested_at,
        events.transaction_id as transaction_id,
        case
            when metrics.aggregation_type in ('sum_agg', 'weighted_sum_agg', 'max_agg', 'latest_agg')
            then {{ billhouse.property_decimal('events.properties', "coalesce(metrics.field_name, '')") }}
        end as field_value,
        case
            when metrics.aggregation_type = 'unique_count_agg'
            then {{ billhouse.property_text('events.properties', "coalesce(metrics.field_name, '')") }}
        end as field_text
    from events
    inner join subscriptions
        on events.external_subscription_id = subscriptions.external_subscription_id
    inner join metrics
        on events.billable_metric_code = metrics.billable_metric_code
),

final as (
    select
        external_customer_id,
        billable_metric_code,
        usage_date,
        aggregation_type,
        count(*) as events_count,
        case aggregation_type
            when 'count_agg' then cast(count(*) as {{ billhouse.nullable_decimal_type() }})
            when 'sum_agg' then cast(coalesce(sum(field_value), 0) as {{ billhouse.nullable_decimal_type() }})
            when 'weighted_sum_agg' then cast(coalesce(sum(field_value), 0) as {{ billhouse.nullable_decimal_type() }})
            when 'max_agg' then cast(max(field_value) as {{ billhouse.nullable_decimal_type() }})
            when 'unique_count_agg' then cast(count(distinct field_text) as {{ billhouse.nullable_decimal_type() }})
            when 'latest_agg' then cast(
                {{ billhouse.latest_agg('field_value', '1', 'event_at', 'ingested_at', 'transaction_id') }}
                as {{ billhouse.nullable_decimal_type() }}
            )
        end as units
    from event_values
    group by external_customer_id, billable_metric_code, usage_date, aggregation_type
)

select * from final
