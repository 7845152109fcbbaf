{#- The invoiced usage periods a close checks for late events: one row per subscription
    and charge period on a finalized invoice (the ledger's fees, mirrored in billed_fees)
    that ended by the close (of its timezone's customers, for a one-timezone close), with
    what its customer's invoices were built from. Narrow on purpose: it holds every
    period ever invoiced, and int_late_usage_periods adds the customer and plan to the
    few that are late.

    read_through_block (ClickHouse): the insert block up to which every event of the
    period is accounted for — its own invoice's (billed_fees.events_through_block), or
    that of its customer's latest invoice when later, because the close that built it
    re-rated the period and billed any difference on it (the customer's latest invoice
    of a close carries its adjustments). Null where it is unknown: PostgreSQL, fees of an
    invoice a re-run found already finalized or billed before blocks were recorded, and
    a store whose events table was re-created since (its blocks are numbered anew). A
    table, because int_late_usage_periods reads it several times.

    last_event_block (ClickHouse): the latest insert block holding an event of the
    period's subscription (int_subscription_event_blocks); a period whose
    read_through_block is at or past it cannot be late. last_billed_period_end: the end
    of the subscription's latest invoiced period (how recently it was billed).

    On ClickHouse the fees are read grouped by period as they were inserted
    (billed_fee_periods, billhouse/billed_fee_periods.py), not fee by fee: with a year
    of fees (3.6 M) this model took 1.47 s of the month-end close against 1.85 s. -#}
{%- set block_numbered = billhouse.events_have_block_numbers() %}
-- depends_on: {{ ref('int_subscription_event_blocks') }}
-- depends_on: {{ source('billhouse', 'billed_fee_periods') }}
with subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

{%- set closed_periods_condition %}
    period_end <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
    {%- if billhouse.close_setting('close_timezone') %}
        and external_subscription_id in (
            select subscriptions.external_subscription_id
            from subscriptions
            inner join customers
                on subscriptions.external_customer_id = customers.external_customer_id
            where customers.timezone = '{{ billhouse.close_setting('close_timezone') }}'
        )
    {%- endif %}
{%- endset %}
{%- if block_numbered %}

-- ClickHouse: the fees' facts per period and events table, kept at insert
-- (billhouse/billed_fee_periods.py) instead of grouping every fee ever billed
fee_periods as (
    select * from {{ source('billhouse', 'billed_fee_periods') }}
),

-- the periods with charges, each with the first invoice that billed them and the
-- furthest block any of their invoices (adjustments included) read, in this events
-- table (a re-created table numbers its blocks anew)
billed_periods as (
    select
        external_subscription_id,
        period_start,
        period_end,
        min(first_charge_issuing_date) as billed_issuing_date,
        max(case
            when events_table_uuid = {{ billhouse.events_table_uuid() }} then events_through_block
        end) as events_through_block
    from fee_periods
    where {{ closed_periods_condition }}
    group by external_subscription_id, period_start, period_end
    having min(first_charge_issuing_date) is not null
),
{%- else %}

-- without FINAL: a fee mirrored twice is the same row, and only min / max read it here
billed_fees as (
    select * from {{ source('billhouse', 'billed_fees') }}
),

-- the periods with charges, each with the first invoice that billed them (no insert
-- blocks here: the late check uses ingestion times)
billed_periods as (
    select
        external_subscription_id,
        period_start,
        period_end,
        min(case when kind = 'charge' then issuing_date end) as billed_issuing_date,
        cast(null as {{ dbt.type_bigint() }}) as events_through_block
    from billed_fees
    where {{ closed_periods_condition }}
    group by external_subscription_id, period_start, period_end
    having min(case when kind = 'charge' then issuing_date end) is not null
),
{%- endif %}

{%- if block_numbered %}

-- each customer's latest invoice with a known block (the latest issuing date; of two
-- such invoices, the one that read further): the close that issued it re-rated the
-- customer's late periods billed before it. Per subscription first, then per customer,
-- then back on each subscription, so the periods join one row each.
subscription_reads as (
    select
        external_subscription_id,
        max(latest_read).1 as latest_issuing_date,
        max(latest_read).2 as events_through_block
    from fee_periods
    where events_table_uuid = {{ billhouse.events_table_uuid() }}
        and latest_read.2 >= 0
    group by external_subscription_id
),

customer_reads as (
    select
        subscriptions.external_customer_id as external_customer_id,
        max(subscription_reads.latest_issuing_date) as latest_issuing_date,
        argMax(
            subscription_reads.events_through_block,
            tuple(subscription_reads.latest_issuing_date, subscription_reads.events_through_block)
        ) as events_through_block
    from subscription_reads
    inner join subscriptions
        on subscription_reads.external_subscription_id = subscriptions.external_subscription_id
    group by subscriptions.external_customer_id
),

customer_reads_by_subscription as (
    select
        subscriptions.external_subscription_id as external_subscription_id,
        customer_reads.latest_issuing_date as latest_issuing_date,
        customer_reads.events_through_block as events_through_block
    from subscriptions
    inner join customer_reads
        on subscriptions.external_customer_id = customer_reads.external_customer_id
),

-- the latest block holding an event of each subscription, in this events table
subscription_blocks as (
    select
        external_subscription_id,
        max(last_block) as last_event_block
    from {{ ref('int_subscription_event_blocks') }}
    where external_subscription_id != ''
        and events_table_uuid = {{ billhouse.events_table_uuid() }}
    group by external_subscription_id
),
{%- endif %}

final as (
    select
        billed_periods.external_subscription_id as external_subscription_id,
        billed_periods.period_start as period_start,
        billed_periods.period_end as period_end,
        billed_periods.billed_issuing_date as billed_issuing_date,
        {%- if block_numbered %}
        -- the period's own invoices read up to its block; the customer's latest invoice,
        -- if later, further (only for a period whose own block is known: its fees were in
        -- billed_fees when the later invoice was built, so that close re-rated it)
        case
            when billed_periods.events_through_block is null then null
            when customer_reads_by_subscription.latest_issuing_date > billed_periods.billed_issuing_date
                then greatest(billed_periods.events_through_block, customer_reads_by_subscription.events_through_block)
            else billed_periods.events_through_block
        end as read_through_block
        {%- else %}
        billed_periods.events_through_block as read_through_block
        {%- endif %},
        {%- if block_numbered %}
        subscription_blocks.last_event_block as last_event_block,
        {%- else %}
        cast(null as {{ dbt.type_bigint() }}) as last_event_block,
        {%- endif %}
        max(billed_periods.period_end) over (partition by billed_periods.external_subscription_id)
            as last_billed_period_end
    from billed_periods
    {%- if block_numbered %}
    left join customer_reads_by_subscription
        on billed_periods.external_subscription_id = customer_reads_by_subscription.external_subscription_id
    left join subscription_blocks
        on billed_periods.external_subscription_id = subscription_blocks.external_subscription_id
    {%- endif %}
)

select * from final
