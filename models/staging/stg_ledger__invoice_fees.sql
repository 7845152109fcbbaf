{{ config(tags=['finance']) }}
{#- Fee lines of issued invoices. -#}
with source as (
    select * from {{ source('ledger', 'invoice_fees') }}
),

renamed as (
    select
        id as fee_id,
        invoice_id,
        fee_key,
        kind as fee_kind,
        external_subscription_id,
        plan_code,
        billable_metric_code,
        charge_model,
        add_on_code,
        invoice_display_name,
        period_start,
        period_end,
        units,
        unit_amount,
        amount_cents,
        precise_coupons_amount_cents,
        position as fee_position
    from source
)

select * from renamed
