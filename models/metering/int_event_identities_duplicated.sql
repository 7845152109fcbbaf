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
{{ config(materialized=('table' if target.type == 'postgres' else 'incremental')) }}
{%- set block_numbered = target.type != 'postgres' %}
{%- set scanned = {'through': none} %}
{%- if block_numbered and is_incremental() and execute %}
    {%- set state = run_query(
        "select max(scanned_through_block) as block, argMax(events_table_uuid, scanned_through_block) as uuid"
        ~ " from " ~ this ~ " where copies = 0"
    ) %}
    {%- set table_uuid = run_query(
        "select toString(uuid) from system.tables where database = '" ~ var('raw_schema') ~ "' and name = 'events'"
    ).columns[0].values()[0] %}
    {%- if state.rows | length > 0 and state.columns[1].values()[0] == table_uuid %}
        {%- do scanned.update({'through': state.columns[0].values()[0]}) %}
    {%- endif %}
{%- endif %}

with events as (
    select * from {{ ref('stg_billhouse__events') }}
),
{%- if block_numbered %}

raw_events as (
    select identity_hash, external_subscription_id, _block_number
    from {{ source('billhouse', 'events') }}
),
{%- endif %}
{%- if scanned.through is not none %}

new_events as (
    select identity_hash, external_subscription_id
    from raw_events
    where _block_number > {{ scanned.through }}
),
{%- endif %}

duplicated as (
    select
        events.identity_hash as identity_hash,
        count(*) as copies
    from events
    {%- if scanned.through is not none %}
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
        {% if block_numbered -%}
        (select max(_block_number) from raw_events) as scanned_through_block,
        (select toString(uuid) from system.tables where database = '{{ var("raw_schema") }}' and name = 'events')
        {%- else -%}
        cast(0 as bigint) as scanned_through_block,
        ''
        {%- endif %} as events_table_uuid
    from duplicated
    {%- if block_numbered %}
    union all
    -- the marker: how far this build scanned the store
    select
        cast(0 as UInt64) as identity_hash,
        cast(0 as UInt64) as copies,
        (select max(_block_number) from raw_events) as scanned_through_block,
        (select toString(uuid) from system.tables where database = '{{ var("raw_schema") }}' and name = 'events') as events_table_uuid
    {%- endif %}
)

select * from final
