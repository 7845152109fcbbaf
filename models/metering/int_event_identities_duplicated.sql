{#-
    The event identities (external_subscription_id, transaction_id) stored more than
    once, as hashes (macro event_identity_hash), so that int_events_deduplicated ranks the
    copies of these identities only.

    On ClickHouse the list grows with the store instead of being recomputed: each close
    appends the identities that the events stored since the previous close made
    duplicated, and a marker row (copies = 0) recording how far the store was read: the
    insert block number (`_block_number`, raw_tables.EVENTS) and the events table's UUID.
    A store whose events table was re-created (another UUID) is read whole again.
    The embedded store's closes find those identities with the identity index before dbt
    runs (billhouse/identity_sync.py) and log them in identity_index_log, which covers the
    table from its first block: this model copies the log's rows past its own marker and
    reads by itself only the events stored after the log's marker (none, after a sync).
    Otherwise (a ClickHouse server, a build without a close) the new events' identities
    are counted over the whole store: a semi-join on one column instead of a GROUP BY of
    every event, since a copy of a new event may be old.
    An identity may be listed more than once (a third copy appends it again); readers
    take the rows with copies > 1 as a set. PostgreSQL rebuilds the list each time.
-#}
{%- set block_numbered = billhouse.events_have_block_numbers() %}
-- depends_on: {{ source('billhouse', 'identity_index_log') }}
{{ config(materialized=('incremental' if block_numbered else 'table')) }}
{%- set scan = billhouse.event_log_scan('copies = 0') %}
{%- set copied_after = scan['from'] %}
{%- set indexed_through = none %}
{%- if block_numbered and execute %}
    {%- set logged = run_query(
        "select max(scanned_through_block) from " ~ source('billhouse', 'identity_index_log')
        ~ " where copies = 0 and events_table_uuid = '" ~ scan.uuid ~ "'") %}
    {%- set logged_through = logged.columns[0].values()[0] | int %}
    {%- if logged_through > 0 and (scan['from'] is none or logged_through > scan['from']) %}
        {%- set indexed_through = logged_through %}
        {%- do scan.update({'from': logged_through}) %}
    {%- endif %}
{%- endif %}
{%- set reads_events = scan['from'] is none or scan['from'] < scan['through'] %}

with events as (
    select * from {{ ref('stg_billhouse__events') }}
),
{%- if scan['from'] is not none and reads_events %}

new_events as (
    select identity_hash, external_subscription_id
    from {{ source('billhouse', 'events') }}
    where {{ billhouse.events_stored_after(scan['from']) }}
),
{%- endif %}

duplicated as (
    {%- if reads_events %}
    select
        events.identity_hash as identity_hash,
        count(*) as copies
    from events
    {%- if scan['from'] is not none %}
    -- the identities of the new events, counted over every copy in the store (the
    -- subscription is the primary key's prefix: only the new events' subscriptions are read)
    where events.identity_hash in (select identity_hash from new_events)
        and events.external_subscription_id in (select external_subscription_id from new_events)
    {%- endif %}
    group by events.identity_hash
    having count(*) > 1
    {%- else %}
    -- nothing stored since the last read
    select cast(0 as UInt64) as identity_hash, cast(0 as UInt64) as copies where false
    {%- endif %}
    {%- if indexed_through is not none %}
    union all
    -- what the identity index found, past this model's own marker
    select identity_hash, copies
    from {{ source('billhouse', 'identity_index_log') }}
    where copies > 1
        and events_table_uuid = '{{ scan.uuid }}'
        {%- if copied_after is not none %}
        and scanned_through_block > {{ copied_after }}
        {%- endif %}
    {%- endif %}
),

final as (
    select
        identity_hash,
        copies,
        cast({{ scan['through'] }} as {{ 'UInt64' if block_numbered else 'bigint' }}) as scanned_through_block,
        '{{ scan['uuid'] }}' as events_table_uuid
    from duplicated
    {%- if block_numbered %}
    union all
    -- the marker: how far this build read the store
    select
        cast(0 as UInt64) as identity_hash,
        cast(0 as UInt64) as copies,
        cast({{ scan['through'] }} as UInt64) as scanned_through_block,
        '{{ scan['uuid'] }}' as events_table_uuid
    {%- endif %}
)

select * from final
