with source as (
    select * from {{ source('billhouse', 'charge_ranges') }}
),

renamed as (
    select
        concat(charge_id, '#', cast(filter_index as {{ dbt.type_string() }})) as charge_price_id,
        charge_id,
        filter_index,
        range_index,
        from_value,
        to_value,
        lower_bound,
        per_unit_amount,
        rate,
        flat_amount
    from source
)

select * from renamed
