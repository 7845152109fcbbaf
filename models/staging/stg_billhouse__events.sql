with source as (
    select * from {{ source('billhouse', 'events') }}
),

renamed as (
    select
        transaction_id,
        external_subscription_id,
        code as billable_metric_code,
        timestamp as event_at,
        properties,
        ingested_at
    from source
)

select * from renamed
