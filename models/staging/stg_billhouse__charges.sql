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
        grouped_by,
        filter_count
    from source
)

select * from renamed
