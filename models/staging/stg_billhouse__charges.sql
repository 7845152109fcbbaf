with source as (
    select * from {{ source('billhouse', 'charges') }}
),

renamed as (
    select
        charge_id,
        plan_code,
        charge_index,
        billable_metric_code,
        charge_model,
        invoice_display_name,
        pay_in_advance,
        prorated,
        min_amount_cents,
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
