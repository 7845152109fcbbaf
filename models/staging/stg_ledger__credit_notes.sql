{{ config(tags=['finance']) }}
{#- Credit notes of issued invoices. -#}
with source as (
    select * from {{ source('ledger', 'credit_notes') }}
),

renamed as (
    select
        id as credit_note_id,
        invoice_id,
        number as credit_note_number,
        external_customer_id,
        currency,
        reason,
        status,
        total_amount_cents,
        taxes_amount_cents,
        refund_amount_cents,
        credit_amount_cents,
        balance_amount_cents,
        refund_status,
        created_at
    from source
)

select * from renamed
