with source as (
    select * from {{ source('billhouse', 'subscriptions') }}
),

renamed as (
    select
        external_id as external_subscription_id,
        external_customer_id,
        plan_code,
        billing_time,
        subscription_at,
        ending_at,
        terminated_at,
        previous_subscription_id
    from source
)

select * from renamed
