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

{#- Which periods to check, and how (ClickHouse): only periods whose subscription has an
    event stored after the block its invoices read (or whose block is unknown). A scan
    of the events stored after a bound finds their late events; one bound for every
    period would be set by the one invoiced longest ago (a churned customer's: every
    event stored since would be read at each close), so the periods of subscriptions
    billed within the last stale_after_days days share one block bound, and the others
    are read by subscription (the primary key's prefix). Every pass reads the events of
    its periods' time range only (the month partitions). PostgreSQL: one pass, by
    ingestion time. -#}
{%- set stale_after_days = 40 %}
{%- set block_numbered = billhouse.events_have_block_numbers() %}
{%- if block_numbered %}
    {%- set recently_billed = "last_billed_period_end >= "
        ~ dbt.dateadd('day', -stale_after_days, billhouse.utc_instant(billhouse.close_setting('as_of'))) %}
    {%- set passes = [('recent', recently_billed), ('stale', 'not (' ~ recently_billed ~ ')')] %}
{%- else %}
    {%- set passes = [('all', '1 = 1')] %}
{%- endif %}
{#- With no period of unknown block in the store, a late event's part was stored after the
    lowest block its pass checks: the parts stored at or before it are skipped whole, before
    a row is read (raw_event_part_last_block). A null block keeps the ingestion-time rule
    in the condition, which names no part. -#}
{%- set parts_skippable = block_numbered and not billhouse.query_has_rows(
    "select 1 from " ~ ref('int_billed_periods_watermarked') ~ " where read_through_block is null") %}
checked_periods as (
    select * from billed_periods
    where read_through_block is null
        or last_event_block > read_through_block
),

late_events as (
    {%- for pass, condition in passes %}
    {%- set lowest_block = "(select min(read_through_block) from checked_periods where " ~ condition ~ ")" %}
    select distinct
        events.external_subscription_id as external_subscription_id,
        periods.period_start as period_start
    from events
    inner join (select * from checked_periods where {{ condition }}) as periods
        on events.external_subscription_id = periods.external_subscription_id
    where events.event_at >= periods.period_start
        and events.event_at < periods.period_end
        and (
            (periods.read_through_block is not null and events.block_number > periods.read_through_block)
            or (periods.read_through_block is null and events.ingested_at > periods.period_end)
        )
        {%- if pass != 'recent' %}
        -- the subscriptions with periods to check only
        and events.external_subscription_id in (
            select external_subscription_id from checked_periods where {{ condition }}
        )
        {%- endif %}
        -- the checked periods' time range: the scan skips the months outside it (the
        -- current month's events, stored after every invoice's block, are read by no pass:
        -- without it, the daily close of Nov 29 read all of November's events, 3.1 s at 93 M)
        and events.event_at >= (select min(period_start) from checked_periods where {{ condition }})
        and events.event_at < (select max(period_end) from checked_periods where {{ condition }})
        -- bounds known before the join, which most events fail (each null when no
        -- period has its kind of bound: a min over no rows of a non-null column is not
        -- null on ClickHouse, hence the case). The block bound is checked on each event's
        -- block number, and on its part's when every block is known (parts_skippable);
        -- for the recent pass a filter on the subscriptions would cost more than it saves
        -- (0.55 s of 1.1 s at 100 M).
        and (
            events.block_number > {{ lowest_block }}
            or events.ingested_at > (
                select min(case when read_through_block is null then period_end end)
                from checked_periods where {{ condition }}
            )
        )
        {%- if parts_skippable %}
        and events.part_last_block > {{ lowest_block }}
        {%- endif %}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
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
