{{ config(tags=['finance']) }}
{#- Card payment attempts, one row per attempt. -#}
with source as (
    select * from {{ source('ledger', 'payment_attempts') }}
),

renamed as (
    select
        id as payment_attempt_id,
        invoice_id,
        attempt_number,
        amount_cents,
        currency,
        status,
        failure_code,
        started_at,
        finished_at
    from source
)

select * from renamed
