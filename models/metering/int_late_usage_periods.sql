{#- Late events: usage periods already on a finalized invoice (the ledger's fees,
    mirrored in billed_fees) that have events the invoice was not built from. One row
    per such period; int_billing_periods adds them to the close so that they are re-rated,
    and int_late_adjustment_fees bills the difference once.

    Which events an invoice was built from: on ClickHouse, every event up to the insert
    block its draft read (billed_fees.events_through_block); a period is also accounted
    up to the block of any later invoice of its customer, because the close that built
    that invoice re-rated the period and billed any difference on it (the customer's
    latest invoice of a close carries its adjustments). So a period whose late events
    were billed, or whose re-rating found nothing more to bill (a resent copy, an event
    priced at zero), stops being re-rated. Where the block is unknown — PostgreSQL, an
    invoice a re-run found already finalized, a store whose events table was re-created
    — the rule is the events ingested after the period's end. -#}
{%- set block_numbered = target.type != 'postgres' %}
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

{%- if block_numbered %}

-- the block each finalized invoice read up to, for this events table only (a re-created
-- table numbers its blocks anew), with the invoice's customer
billed_reads as (
    select
        billed_fees.external_subscription_id as external_subscription_id,
        billed_fees.period_start as period_start,
        billed_fees.period_end as period_end,
        billed_fees.issuing_date as issuing_date,
        subscriptions.external_customer_id as external_customer_id,
        billed_fees.events_through_block as events_through_block
    from billed_fees
    inner join subscriptions
        on billed_fees.external_subscription_id = subscriptions.external_subscription_id
    where billed_fees.events_through_block is not null
        and billed_fees.events_table_uuid = (
            select toString(uuid) from system.tables
            where database = '{{ var('raw_schema') }}' and name = 'events'
        )
),

period_reads as (
    select
        external_subscription_id,
        period_start,
        period_end,
        max(events_through_block) as events_through_block
    from billed_reads
    group by external_subscription_id, period_start, period_end
),

customer_reads as (
    select
        external_customer_id,
        issuing_date,
        max(events_through_block) as events_through_block
    from billed_reads
    group by external_customer_id, issuing_date
),
{%- endif %}

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
        plans.amount_cents as plan_amount_cents,
        {%- if block_numbered %}
        -- the period's own invoice read up to period_reads' block; a later invoice of the
        -- customer, further (only for a period whose own block is known: its fees were
        -- in billed_fees when the later invoice was built, so that close re-rated it)
        case
            when max(period_reads.events_through_block) is null then null
            else greatest(
                max(period_reads.events_through_block),
                coalesce(max(case
                    when customer_reads.issuing_date > billed_periods.billed_issuing_date
                        then customer_reads.events_through_block
                end), 0)
            )
        end as read_through_block
        {%- else %}
        cast(null as {{ dbt.type_bigint() }}) as read_through_block
        {%- endif %}
    from billed_periods
    inner join subscriptions
        on billed_periods.external_subscription_id = subscriptions.external_subscription_id
    inner join plans
        on subscriptions.plan_code = plans.plan_code
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    {%- if block_numbered %}
    left join period_reads
        on billed_periods.external_subscription_id = period_reads.external_subscription_id
        and billed_periods.period_start = period_reads.period_start
        and billed_periods.period_end = period_reads.period_end
    left join customer_reads
        on subscriptions.external_customer_id = customer_reads.external_customer_id
    {%- endif %}
    where billed_periods.period_end <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
    {% if billhouse.close_setting('close_timezone') %}
        and customers.timezone = '{{ billhouse.close_setting('close_timezone') }}'
    {% endif %}
    {%- if block_numbered %}
    group by
        billed_periods.external_subscription_id, billed_periods.period_start, billed_periods.period_end,
        billed_periods.billed_issuing_date, subscriptions.external_customer_id, subscriptions.plan_code,
        customers.customer_name, customers.currency, customers.timezone, plans.plan_interval, plans.amount_cents
    {%- endif %}
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
        and (
            (in_scope.read_through_block is not null and events.block_number > in_scope.read_through_block)
            or (in_scope.read_through_block is null and events.ingested_at > in_scope.period_end)
        )
        -- bounds known before the join: most events are older than both
        and (
            events.block_number > (select min(read_through_block) from in_scope)
            or events.ingested_at > (select min(period_end) from in_scope where read_through_block is null)
        )
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
