{#- The charge periods of the events this close bills per event: one row per
    subscription and charge period (the plan-interval period, or its monthly slice when
    the plan bills charges monthly) holding an event of a per-event charge whose fee
    closes in the window (close_from, as_of]. Per-event fees are priced on the period's
    cumulative units, so the period is needed even when it closed long ago (a late
    event). The period of a date follows the billing clock exactly as
    int_subscription_periods and int_billing_periods build it — the same macros
    (macros/calendar/billing_periods.sql: anchors, period bounds, end dates, monthly
    slices) and the same subscription_period_key — but for the events' dates, not for
    the close's window. -#}
{{ config(meta={'customer_timezones': ['close_timezone', 'with_per_event_charges']}) }}
{#- built empty without a per-event charge in the catalog (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.relation_has_rows(ref('int_pay_in_advance_charges'))) %}
with per_event_charges as (
    select * from {{ ref('int_pay_in_advance_charges') }}
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
    select * from {{ ref('int_events_deduplicated') }}
    {%- if not billhouse.relation_has_rows(ref('int_pay_in_advance_charges')) %}
    -- no per-event charge in the catalog: not an event is read
    where false
    {%- endif %}
),

successors as (
    {{ billhouse.subscription_successors('subscriptions') }}
),

per_event_metrics as (
    select distinct plan_code, billable_metric_code from per_event_charges
),

billable_events as (
    select
        events.external_subscription_id as external_subscription_id,
        customers.timezone as timezone,
        events.event_at as event_at,
        {{ billhouse.date_add_days(
            billhouse.local_date('greatest(events.event_at, events.ingested_at)', 'customers.timezone'), 1) }}
            as issuing_date
    from events
    inner join subscriptions
        on events.external_subscription_id = subscriptions.external_subscription_id
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    inner join per_event_metrics
        on subscriptions.plan_code = per_event_metrics.plan_code
        and events.billable_metric_code = per_event_metrics.billable_metric_code
    -- a column of the events: without per-event charges the scan reads nothing more
    where events.billable_metric_code in (select billable_metric_code from per_event_charges)
        and greatest(events.event_at, events.ingested_at) < {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
        and greatest(events.event_at, events.ingested_at)
            >= {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }} - interval '3' day
    {% if billhouse.close_setting('close_timezone') %}
        and customers.timezone = '{{ billhouse.close_setting('close_timezone') }}'
    {% endif %}
),

{#- the local days holding an event whose fee closes in the window -#}
event_days as (
    select distinct
        external_subscription_id,
        {{ billhouse.local_date('event_at', 'timezone') }} as event_date
    from billable_events
    where {{ billhouse.local_midnight('issuing_date', 'timezone') }} > {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }}
        and {{ billhouse.local_midnight('issuing_date', 'timezone') }} <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

subscription_clock as (
    select
        event_days.event_date as event_date,
        subscriptions.external_subscription_id as external_subscription_id,
        subscriptions.external_customer_id as external_customer_id,
        subscriptions.plan_code as plan_code,
        customers.currency as currency,
        customers.timezone as timezone,
        plans.plan_interval as plan_interval,
        plans.bill_charges_monthly as bill_charges_monthly,
        subscriptions.billing_time as billing_time,
        {{ billhouse.local_date('subscriptions.subscription_at', 'customers.timezone') }} as start_date,
        {{ billhouse.subscription_end_date(
            'successors.has_successor', 'successors.successor_at',
            'subscriptions.terminated_at', 'subscriptions.ending_at', 'customers.timezone') }} as end_date,
        {{ billhouse.plan_interval_months('plans.plan_interval') }} as interval_months
    from event_days
    inner join subscriptions
        on event_days.external_subscription_id = subscriptions.external_subscription_id
    inner join plans
        on subscriptions.plan_code = plans.plan_code
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    left join successors
        on subscriptions.external_subscription_id = successors.external_subscription_id
),

anchored as (
    select
        subscription_clock.*,
        {{ billhouse.period_anchor_date('billing_time', 'start_date', 'plan_interval') }} as anchor_date
    from subscription_clock
),

{#- the period index holding the event's date, counted from the anchor; a clamped
    anniversary can put it one lower, so one index either side is tried and the rows
    are filtered exactly below -#}
indexed as (
    select
        anchored.*,
        case
            when interval_months = 0 then floor({{ billhouse.days_between('anchor_date', 'event_date') }} / 7)
            else floor({{ billhouse.months_between('anchor_date', 'event_date') }} / interval_months)
        end as estimated_index
    from anchored
),

expanded as (
    select
        indexed.*,
        {{ billhouse.integer_range_column('greatest(estimated_index - 1, 0)', 'estimated_index + 1') }} as period_index
    from indexed
    where estimated_index + 1 >= 0
),

bounded as (
    select
        expanded.*,
        {{ billhouse.period_start_date('anchor_date', 'interval_months', 'period_index') }} as full_start_date,
        {{ billhouse.period_start_date('anchor_date', 'interval_months', 'period_index + 1') }} as full_end_date
    from expanded
),

billed as (
    select
        bounded.*,
        greatest(full_start_date, start_date) as billed_start_date,
        case
            when end_date is not null and end_date < full_end_date then end_date
            else full_end_date
        end as billed_end_date
    from bounded
    where full_start_date <= event_date
        and event_date < full_end_date
),

sliced as (
    select
        billed.*,
        {{ billhouse.charge_slice_indexes('bill_charges_monthly', 'plan_interval') }} as slice_index
    from billed
    where billed_start_date <= event_date
        and event_date < billed_end_date
),

slice_dates as (
    select
        sliced.*,
        {{ billhouse.charge_slice_start_date(
            'bill_charges_monthly', 'plan_interval', 'full_start_date', 'billed_start_date', 'slice_index') }}
            as charge_start_date,
        {{ billhouse.charge_slice_end_date(
            'bill_charges_monthly', 'plan_interval', 'full_start_date', 'billed_end_date', 'slice_index') }}
            as charge_end_date
    from sliced
),

final as (
    select distinct
        concat(
            external_subscription_id, '/',
            cast(charge_start_date as {{ dbt.type_string() }})
        ) as subscription_period_key,
        external_subscription_id,
        external_customer_id,
        plan_code,
        currency,
        timezone,
        {{ billhouse.local_midnight('charge_start_date', 'timezone') }} as period_start,
        {{ billhouse.local_midnight('charge_end_date', 'timezone') }} as period_end
    from slice_dates
    where charge_start_date <= event_date
        and event_date < charge_end_date
)

select * from final
{% endcall %}
