{#- Late events: usage periods already on a finalized invoice (the ledger's fees,
    mirrored in billed_fees) that have events ingested after the period closed. One row
    per such period; int_billing_periods adds them to the close so that they are re-rated,
    and int_late_adjustment_fees bills the difference once. -#}
with billed_fees as (
    select * from {{ source('billhouse', 'billed_fees') }} {{ 'final' if target.type in ('clickhouse', 'chdb') else '' }}
),

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

plans as (
    select * from {{ ref('stg_billhouse__plans') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

events as (
    select * from {{ ref('stg_billhouse__events') }}
),

billed_periods as (
    select
        billed_fees.external_subscription_id as external_subscription_id,
        billed_fees.period_start as period_start,
        billed_fees.period_end as period_end,
        min(billed_fees.issuing_date) as billed_issuing_date
    from billed_fees
    where billed_fees.kind = 'charge'
    group by billed_fees.external_subscription_id, billed_fees.period_start, billed_fees.period_end
),

in_scope as (
    select
        billed_periods.external_subscription_id as external_subscription_id,
        billed_periods.period_start as period_start,
        billed_periods.period_end as period_end,
        billed_periods.billed_issuing_date as billed_issuing_date,
        subscriptions.external_customer_id as external_customer_id,
        subscriptions.plan_code as plan_code,
        customers.customer_name as customer_name,
        customers.currency as currency,
        customers.timezone as timezone,
        plans.plan_interval as plan_interval,
        plans.amount_cents as plan_amount_cents
    from billed_periods
    inner join subscriptions
        on billed_periods.external_subscription_id = subscriptions.external_subscription_id
    inner join plans
        on subscriptions.plan_code = plans.plan_code
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    where billed_periods.period_end <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
    {% if billhouse.close_setting('close_timezone') %}
        and customers.timezone = '{{ billhouse.close_setting('close_timezone') }}'
    {% endif %}
),

late_events as (
    select distinct
        events.external_subscription_id as external_subscription_id,
        in_scope.period_start as period_start
    from events
    inner join in_scope
        on events.external_subscription_id = in_scope.external_subscription_id
    -- the subscriptions with billed periods only (the events' primary key prefix)
    where events.external_subscription_id in (select external_subscription_id from in_scope)
        and events.event_at >= in_scope.period_start
        and events.event_at < in_scope.period_end
        and events.ingested_at > in_scope.period_end
        and events.ingested_at > (select min(period_end) from in_scope)
),

final as (
    select
        concat(
            in_scope.external_subscription_id, '/',
            cast({{ billhouse.local_date('in_scope.period_start', 'in_scope.timezone') }} as {{ dbt.type_string() }})
        ) as subscription_period_key,
        in_scope.external_subscription_id as external_subscription_id,
        in_scope.external_customer_id as external_customer_id,
        in_scope.customer_name as customer_name,
        in_scope.plan_code as plan_code,
        in_scope.plan_interval as plan_interval,
        in_scope.plan_amount_cents as plan_amount_cents,
        in_scope.currency as currency,
        in_scope.timezone as timezone,
        cast(-1 as {{ dbt.type_int() }}) as period_index,
        in_scope.period_start as period_start,
        in_scope.period_end as period_end,
        in_scope.billed_issuing_date as issuing_date
    from in_scope
    inner join late_events
        on in_scope.external_subscription_id = late_events.external_subscription_id
        and in_scope.period_start = late_events.period_start
)

select * from final
