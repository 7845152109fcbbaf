{{ config(tags=['finance']) }}
{#- Prepaid-credit wallet movements, with the wallet's customer and currency. -#}
with source as (
    select * from {{ source('ledger', 'wallet_transactions') }}
),

renamed as (
    select
        id as wallet_transaction_id,
        wallet_id,
        external_customer_id,
        currency,
        transaction_type,
        source as transaction_source,
        paid_credits,
        granted_credits,
        credits,
        amount_cents,
        balance_after,
        invoice_id,
        position as transaction_position,
        created_at
    from source
)

select * from renamed
