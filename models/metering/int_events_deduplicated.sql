{#- Each event once: of the copies of one (external_subscription_id, transaction_id),
    the first accepted wins and later copies are ignored (semantics.md). -#}
with events as (
    select * from {{ ref('stg_billhouse__events') }}
),

ranked as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at,
        row_number() over (
            partition by external_subscription_id, transaction_id
            order by ingested_at, event_at, billable_metric_code, properties
        ) as copy_number
    from events
),

final as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at
    from ranked
    where copy_number = 1
)

select * from final
