{{ config(tags=['finance']) }}
{#- Collection state of each invoice the payments module has taken on. -#}
with source as (
    select * from {{ source('ledger', 'invoice_collections') }}
),

renamed as (
    select
        invoice_id,
        amount_due_cents,
        currency,
        due_date,
        state as collection_state,
        overdue_at
    from source
)

select * from renamed
