{#- Pay-in-advance charges, billed per event: one fee per deduplicated event of a charge
    with `pay_in_advance: true` (standard model, count_agg or sum_agg), issued at the
    first local midnight after the event both happened and arrived — so each daily
    close bills the events of the day before, and a late arrival the next day. -#}
with per_event_charges as (
    select * from {{ ref('int_pay_in_advance_charges') }}
),

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

candidate_events as (
    select
        events.transaction_id as transaction_id,
        events.external_subscription_id as external_subscription_id,
        events.event_at as event_at,
        greatest(events.event_at, events.ingested_at) as billable_at,
        subscriptions.external_customer_id as external_customer_id,
        subscriptions.plan_code as plan_code,
        customers.currency as currency,
        customers.timezone as timezone,
        per_event_charges.charge_id as charge_id,
        per_event_charges.billable_metric_code as billable_metric_code,
        per_event_charges.charge_model as charge_model,
        per_event_charges.invoice_display_name as invoice_display_name,
        per_event_charges.amount as unit_amount,
        case per_event_charges.aggregation_type
            when 'count_agg' then {{ billhouse.to_decimal('1') }}
            else coalesce({{ billhouse.property_decimal('events.properties', 'per_event_charges.field_name') }}, 0)
        end as units
    from events
    inner join subscriptions
        on events.external_subscription_id = subscriptions.external_subscription_id
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    inner join per_event_charges
        on subscriptions.plan_code = per_event_charges.plan_code
        and events.billable_metric_code = per_event_charges.billable_metric_code
    -- a column of the events: without per-event charges the scan reads nothing more
    where events.billable_metric_code in (select billable_metric_code from per_event_charges)
        and greatest(events.event_at, events.ingested_at) < {{ billhouse.utc_instant(var('as_of')) }}
        and greatest(events.event_at, events.ingested_at)
            >= {{ billhouse.utc_instant(var('close_from')) }} - interval '3' day
    {% if var('close_timezone') %}
        and customers.timezone = '{{ var("close_timezone") }}'
    {% endif %}
),

issued as (
    select
        candidate_events.*,
        {{ billhouse.date_add_days(billhouse.local_date('billable_at', 'timezone'), 1) }} as issuing_date
    from candidate_events
),

timed as (
    select
        issued.*,
        {{ billhouse.local_midnight('issuing_date', 'timezone') }} as closes_at
    from issued
),

final as (
    select
        concat(timed.external_subscription_id, '/', timed.charge_id, '/event/', timed.transaction_id) as fee_key,
        timed.external_subscription_id as external_subscription_id,
        timed.external_customer_id as external_customer_id,
        timed.plan_code as plan_code,
        timed.currency as currency,
        timed.event_at as period_start,
        timed.event_at as period_end,
        timed.issuing_date as issuing_date,
        timed.closes_at as closes_at,
        timed.charge_id as charge_id,
        timed.billable_metric_code as billable_metric_code,
        timed.charge_model as charge_model,
        timed.invoice_display_name as invoice_display_name,
        timed.transaction_id as transaction_id,
        {{ billhouse.to_decimal('timed.units') }} as units,
        timed.unit_amount as unit_amount,
        timed.units * timed.unit_amount as precise_amount,
        {{ billhouse.to_minor_units('timed.units * timed.unit_amount', 'currencies.minor_units_per_major') }} as amount_cents
    from timed
    inner join currencies
        on timed.currency = currencies.currency
    where timed.closes_at > {{ billhouse.utc_instant(var('close_from')) }}
        and timed.closes_at <= {{ billhouse.utc_instant(var('as_of')) }}
)

select * from final
