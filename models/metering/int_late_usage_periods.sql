{#- Late events: usage periods already on a finalized invoice that have events the
    invoice was not built from. One row per such period; int_billing_periods adds them to
    the close so that they are re-rated, and int_late_adjustment_fees bills the
    difference once.

    On ClickHouse a period is late when it has events stored after the block its
    customer's invoices read up to (int_billed_periods_watermarked): a period whose late
    events were billed, or whose re-rating found nothing more to bill (a resent copy, an
    event priced at zero), is not re-rated again. Where that block is unknown
    (PostgreSQL; see int_billed_periods_watermarked), the rule is the events ingested
    after the period's end (docs/billing-clock.md, "Late events"). -#}
{{ config(meta={'customer_timezones': ['close_timezone']}) }}
with billed_periods as (
    select * from {{ ref('int_billed_periods_watermarked') }}
),

events as (
    select * from {{ ref('stg_billhouse__events') }}
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

late_events as (
    select distinct
        events.external_subscription_id as external_subscription_id,
        billed_periods.period_start as period_start
    from events
    inner join billed_periods
        on events.external_subscription_id = billed_periods.external_subscription_id
    where events.event_at >= billed_periods.period_start
        and events.event_at < billed_periods.period_end
        and (
            (billed_periods.read_through_block is not null and events.block_number > billed_periods.read_through_block)
            or (billed_periods.read_through_block is null and events.ingested_at > billed_periods.period_end)
        )
        {%- if not billhouse.events_have_block_numbers() %}
        -- the subscriptions with billed periods only
        and events.external_subscription_id in (select external_subscription_id from billed_periods)
        {%- endif %}
        -- bounds known before the join, which most events fail (each null when no
        -- period has its kind of bound: a min over no rows of a non-null column is not
        -- null on ClickHouse, hence the case). On ClickHouse the block bound skips
        -- whole parts (each knows its block range): a filter on the subscriptions, the
        -- primary key's prefix, would cost more than it saves (0.55 s of 1.1 s at 100 M).
        and (
            events.block_number > (select min(read_through_block) from billed_periods)
            or events.ingested_at > (
                select min(case when read_through_block is null then period_end end) from billed_periods
            )
        )
),

final as (
    select
        concat(
            billed_periods.external_subscription_id, '/',
            cast({{ billhouse.local_date('billed_periods.period_start', 'customers.timezone') }} as {{ dbt.type_string() }})
        ) as subscription_period_key,
        billed_periods.external_subscription_id as external_subscription_id,
        subscriptions.external_customer_id as external_customer_id,
        customers.customer_name as customer_name,
        subscriptions.plan_code as plan_code,
        plans.plan_interval as plan_interval,
        plans.amount_cents as plan_amount_cents,
        customers.currency as currency,
        customers.timezone as timezone,
        cast(-1 as {{ dbt.type_int() }}) as period_index,
        billed_periods.period_start as period_start,
        billed_periods.period_end as period_end,
        billed_periods.billed_issuing_date as issuing_date
    from billed_periods
    inner join late_events
        on billed_periods.external_subscription_id = late_events.external_subscription_id
        and billed_periods.period_start = late_events.period_start
    inner join subscriptions
        on billed_periods.external_subscription_id = subscriptions.external_subscription_id
    inner join plans
        on subscriptions.plan_code = plans.plan_code
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
)

select * from final
