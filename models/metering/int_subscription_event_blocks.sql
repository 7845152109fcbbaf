{#-
    The latest insert block holding an event of each subscription (ClickHouse), so that
    the late-event check (int_late_usage_periods) looks only at invoiced periods whose
    subscription has events stored after its invoices were built. Without it, one
    customer invoiced long ago (a churned one, say) pulled the check's block bound back
    to its invoice, and every close scanned every event stored since.

    An append-only log like int_event_identities_duplicated: each close appends, per
    subscription with events in the blocks loaded since the previous close, the highest
    such block, and a marker row (external_subscription_id '') recording how far it
    scanned; readers take the maximum per subscription. Blocks at or below every block an
    invoice was built from can never hold a late event (invoices built later read
    further), so a first build starts at the lowest block of the invoices in billed_fees,
    or at the store's current block when there is none. A re-created events table (other
    UUID, blocks numbered anew) starts over. PostgreSQL has no insert blocks: the table
    is empty there, and the late-event check uses ingestion times instead.
-#}
{%- set block_numbered = billhouse.events_have_block_numbers() %}
{%- if block_numbered %}
{#- Replacing on (table, subscription), keeping the highest block: the merges leave one row
    per subscription, where a plain log grew by every close's subscriptions (a year of
    daily closes over 100 000 subscriptions: 36.5 M rows, 0.84-0.99 s per close to read,
    docs/performance.md). Readers still take the maximum, merged or not. -#}
{{ config(
    materialized='incremental',
    engine='ReplacingMergeTree(last_block)',
    order_by='(events_table_uuid, external_subscription_id)',
    pre_hook="{{ billhouse.upgrade_log_engine() }}",
) }}
{%- else %}
{{ config(materialized='table') }}
{%- endif %}
{%- set scan = billhouse.event_log_scan("external_subscription_id = ''") %}
{%- if block_numbered and execute %}
    {%- if scan['from'] is none %}
        {%- set invoiced = run_query(
            "select min(events_through_block) from " ~ source('billhouse', 'billed_fees')
            ~ " where events_table_uuid = '" ~ scan.uuid ~ "' and events_through_block is not null"
        ) %}
        {%- set lowest = invoiced.columns[0].values()[0] %}
        {%- do scan.update({'from': (lowest | int) if lowest is not none else scan.through}) %}
    {%- endif %}
{%- endif %}

with events as (
    select * from {{ ref('stg_billhouse__events') }}
),

latest_blocks as (
    select
        events.external_subscription_id as external_subscription_id,
        max(events.block_number) as last_block
    from events
    {%- if block_numbered %}
    -- the parts stored since first: the others are not read at all
    where {{ billhouse.events_stored_after(scan['from'], 'events.part_last_block', 'events.block_number') }}
    {%- else %}
    where false
    {%- endif %}
    group by events.external_subscription_id
),

final as (
    select
        external_subscription_id,
        cast(last_block as {{ 'UInt64' if block_numbered else dbt.type_bigint() }}) as last_block,
        cast({{ scan['through'] }} as {{ 'UInt64' if block_numbered else dbt.type_bigint() }}) as scanned_through_block,
        cast('{{ scan['uuid'] }}' as {{ dbt.type_string() }}) as events_table_uuid
    from latest_blocks
    {%- if block_numbered %}
    union all
    -- the marker: how far this build scanned the store
    select
        '' as external_subscription_id,
        cast({{ scan['through'] }} as UInt64) as last_block,
        cast({{ scan['through'] }} as UInt64) as scanned_through_block,
        '{{ scan['uuid'] }}' as events_table_uuid
    {%- endif %}
)

select * from final
