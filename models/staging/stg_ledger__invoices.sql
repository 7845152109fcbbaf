{{ config(tags=['finance']) }}
{#- Issued invoices (finalized or voided) as the ledger holds them. -#}
with source as (
    select * from {{ source('ledger', 'invoices') }}
),

renamed as (
    select
        id as invoice_id,
        number as invoice_number,
        invoice_type,
        billing_entity,
        external_customer_id,
        customer_name,
        currency,
        currency_exponent,
        issuing_date,
        due_date,
        period_start,
        period_end,
        status,
        payment_status,
        sub_total_cents,
        coupons_cents,
        taxes_cents,
        credit_notes_cents,
        prepaid_credits_cents,
        total_cents,
        finalized_at,
        voided_at
    from source
)

select * from renamed
