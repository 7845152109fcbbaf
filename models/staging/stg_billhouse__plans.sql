with source as (
    select * from {{ source('billhouse', 'plans') }}
),

renamed as (
    select
        code as plan_code,
        name as plan_name,
        {{ adapter.quote('interval') }} as plan_interval,
        amount_cents,
        amount_currency,
        pay_in_advance,
        trial_period,
        bill_charges_monthly,
        minimum_commitment_cents
    from source
)

select * from renamed
