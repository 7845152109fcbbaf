{#-
    The event identities (external_subscription_id, transaction_id) stored more than
    once, as hashes (macro event_identity_hash), so that int_events_deduplicated ranks the
    copies of these identities only.

    On ClickHouse the list grows with the store instead of being recomputed: each close
    appends the identities that the events loaded since the previous close made
    duplicated (a copy of a new event may be old, so the new events' identities are
    counted over the whole store, a semi-join on one column instead of a GROUP BY of every
    event), and a marker row (copies = 0) recording how far the store was scanned: the
    insert block number (`_block_number`, raw_tables.EVENTS) and the events table's UUID.
    A store whose events table was re-created (another UUID) is scanned whole again.
    An identity may be listed more than once (a third copy appends it again); readers
    take the rows with copies > 1 as a set. PostgreSQL rebuilds the list each time.
-#}
{%- set block_numbered = billhouse.events_have_block_numbers() %}
{{ config(materialized=('incremental' if block_numbered else 'table')) }}
{%- set scan = billhouse.event_log_scan('copies = 0') %}

with events as (
    select * from {{ ref('stg_billhouse__events') }}
),
{%- if scan['from'] is not none %}

new_events as (
    select identity_hash, external_subscription_id
    from {{ source('billhouse', 'events') }}
    where {{ billhouse.events_stored_after(scan['from']) }}
),
{%- endif %}

duplicated as (
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
    -- the marker: how far this build scanned the store
    select
        cast(0 as UInt64) as identity_hash,
        cast(0 as UInt64) as copies,
        cast({{ scan['through'] }} as UInt64) as scanned_through_block,
        '{{ scan['uuid'] }}' as events_table_uuid
    {%- endif %}
)

select * from final
