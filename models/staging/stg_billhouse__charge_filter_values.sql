with source as (
    select * from {{ source('billhouse', 'charge_filter_values') }}
),

renamed as (
    select
        charge_id,
        filter_index,
        property_key,
        value as accepted_value
    from source
)

select * from renamed
