with source as (
    {#- columns named: ClickHouse leaves the stored identity_hash out of `select *` -#}
    select
        transaction_id,
        external_subscription_id,
        code,
        timestamp,
        properties,
        ingested_at,
        {{ billhouse.raw_event_identity_hash() }} as identity_hash
    from {{ source('billhouse', 'events') }}
),

renamed as (
    select
        transaction_id,
        external_subscription_id,
        code as billable_metric_code,
        timestamp as event_at,
        properties,
        ingested_at,
        identity_hash
    from source
)

select * from renamed
