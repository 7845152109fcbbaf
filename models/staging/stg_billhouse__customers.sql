with source as (
    select * from {{ source('billhouse', 'customers') }}
),

renamed as (
    select
        external_id as external_customer_id,
        name as customer_name,
        currency,
        timezone
    from source
)

select * from renamed
