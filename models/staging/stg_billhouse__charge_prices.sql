with source as (
    select * from {{ source('billhouse', 'charge_prices') }}
),

renamed as (
    select
        concat(charge_id, '#', cast(filter_index as {{ dbt.type_string() }})) as charge_price_id,
        charge_id,
        filter_index,
        invoice_display_name,
        amount,
        package_size,
        free_units,
        rate,
        fixed_amount,
        free_units_per_events,
        free_units_per_total_aggregation,
        per_transaction_min_amount,
        per_transaction_max_amount
    from source
)

select * from renamed
