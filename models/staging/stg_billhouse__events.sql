with source as (
    {#- columns named: ClickHouse leaves the stored identity_hash and property_numbers
        out of `select *` -#}
    select
        transaction_id,
        external_subscription_id,
        code,
        timestamp,
        properties,
        ingested_at,
        {{ billhouse.raw_event_identity_hash() }} as identity_hash,
        {{ billhouse.raw_event_property_numbers() }} as property_numbers,
        {{ billhouse.raw_event_block_number() }} as block_number,
        {{ billhouse.raw_event_part_last_block() }} as part_last_block
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
        identity_hash,
        property_numbers,
        block_number,
        part_last_block
    from source
)

select * from renamed
