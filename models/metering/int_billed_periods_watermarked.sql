{#- The invoiced usage periods a close checks for late events: one row per subscription
    and charge period on a finalized invoice (the ledger's fees, mirrored in billed_fees)
    that ended by the close, with what its customer's invoices were built from.

    read_through_block (ClickHouse): the insert block up to which every event of the
    period is accounted for — its own invoice's (billed_fees.events_through_block), or
    that of its customer's latest invoice when later, because the close that built it
    re-rated the period and billed any difference on it (the customer's latest invoice
    of a close carries its adjustments). Null where it is unknown: PostgreSQL, fees of an
    invoice a re-run found already finalized or billed before blocks were recorded, and
    a store whose events table was re-created since (its blocks are numbered anew). A
    table, because int_late_usage_periods reads it several times. -#}
{%- set block_numbered = target.type != 'postgres' %}
-- without FINAL: a fee mirrored twice is the same row, and only min / max read it here
with billed_fees as (
    select * from {{ source('billhouse', 'billed_fees') }}
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
        and billed_fees.events_table_uuid = {{ billhouse.events_table_uuid() }}
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

-- each customer's latest invoice with a known block: the close that issued it re-rated
-- the customer's late periods billed before it (any later invoice would do; the latest
-- read the most, and one row per customer keeps the join below one to one)
customer_reads as (
    select
        external_customer_id,
        max(issuing_date) as latest_issuing_date,
        argMax(events_through_block, issuing_date) as events_through_block
    from billed_reads
    group by external_customer_id
),
{%- endif %}

final as (
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
        -- the period's own invoice read up to period_reads' block; the customer's latest
        -- invoice, if later, further (only for a period whose own block is known: its fees
        -- were in billed_fees when the later invoice was built, so that close re-rated it)
        case
            when period_reads.events_through_block is null then null
            when customer_reads.latest_issuing_date > billed_periods.billed_issuing_date
                then greatest(period_reads.events_through_block, customer_reads.events_through_block)
            else period_reads.events_through_block
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
)

select * from final
