{#- Insert blocks of the raw events (ClickHouse): each row keeps the number of the insert
    block that stored it (raw_tables.EVENTS, enable_block_number_column), and the numbers
    only grow within one events table. How far a build has read is the duplicate index's
    marker (int_event_identities_duplicated, rows with copies = 0). -#}

{#- Whether the raw events carry the insert block that stored them (ClickHouse). -#}
{% macro events_have_block_numbers() -%}
    {{ return(adapter.dispatch('events_have_block_numbers', 'billhouse')()) }}
{%- endmacro %}

{% macro default__events_have_block_numbers() -%}
    {{ return(false) }}
{%- endmacro %}

{% macro clickhouse__events_have_block_numbers() -%}
    {{ return(true) }}
{%- endmacro %}


{#- The insert block that stored a raw event row; elsewhere null. -#}
{% macro raw_event_block_number() -%}
    {{ return(adapter.dispatch('raw_event_block_number', 'billhouse')()) }}
{%- endmacro %}

{% macro default__raw_event_block_number() -%}
    cast(null as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro clickhouse__raw_event_block_number() -%}
    _block_number
{%- endmacro %}


{#- The highest insert block of the part that stores a raw event row; elsewhere null. A
    part's name ends in its block range (<partition>_<min block>_<max block>_<level>,
    then a mutation number if any; the events' partition ids, such as 202611-1, hold no '_'), and
    ClickHouse filters a query's parts on conditions over `_part` before it reads a row:
    `part_last_block > B` skips every part stored at or before block B, where
    `block_number > B` alone reads the block number of every stored event (0.45 s at
    193 M events, with nothing new). Evaluated on the query's own parts, so a merge
    cannot hide a row from it. -#}
{% macro raw_event_part_last_block() -%}
    {{ return(adapter.dispatch('raw_event_part_last_block', 'billhouse')()) }}
{%- endmacro %}

{% macro default__raw_event_part_last_block() -%}
    cast(null as {{ dbt.type_bigint() }})
{%- endmacro %}

{% macro clickhouse__raw_event_part_last_block() -%}
    toUInt64(splitByChar('_', _part)[3])
{%- endmacro %}


{#- ClickHouse: the event rows stored after insert block `block`, reading only the parts
    stored since: the part's last block first (it skips whole parts), then the row's.
    On the raw events table by default; `part_last_block` and `block_number` name the
    columns of stg_billhouse__events. -#}
{% macro events_stored_after(block, part_last_block=none, block_number=none) -%}
    {{ part_last_block or billhouse.raw_event_part_last_block() }} > {{ block }}
    and {{ block_number or billhouse.raw_event_block_number() }} > {{ block }}
{%- endmacro %}


{#- ClickHouse: the UUID of the raw events table, as a scalar subquery. Block numbers
    count per table: a re-created table (another UUID) numbers its blocks anew. -#}
{% macro events_table_uuid() -%}
    (select toString(uuid) from system.tables where database = '{{ var('raw_schema') }}' and name = 'events')
{%- endmacro %}


{#- ClickHouse: the highest insert block of the raw events, as a scalar subquery, from
    the parts' block ranges instead of reading `_block_number` of every event (0.24 s at
    100 M). A part's range covers its rows' blocks, and every later insert takes a higher
    block, so the value is at least every stored row's and below every row to come. -#}
{% macro events_last_block() -%}
    (select max(max_block_number) from system.parts
        where database = '{{ var('raw_schema') }}' and table = 'events' and active)
{%- endmacro %}


{#- ClickHouse: the block up to which the latest build of the duplicate index read the
    current events table (0 before any), as a scalar subquery. -#}
{% macro events_read_through_block(duplicated_relation) -%}
    (select max(scanned_through_block) from {{ duplicated_relation }}
        where copies = 0 and events_table_uuid = {{ billhouse.events_table_uuid() }})
{%- endmacro %}


{#- How far an append-only log over the raw events' insert blocks reads in this build
    (ClickHouse; int_event_identities_duplicated, int_subscription_event_blocks), at
    compile time, once (nothing inserts while the close owns the store): 'through', the
    store's last block now, and the events table's 'uuid'; 'from', the block the log's
    latest marker row (`marker_condition`) scanned through — none on a first build, or
    when the events table was re-created since (other UUID, blocks numbered anew). -#}
{% macro event_log_scan(marker_condition) -%}
    {%- set scan = {'from': none, 'through': 0, 'uuid': ''} %}
    {%- if billhouse.events_have_block_numbers() and execute %}
        {%- set store = run_query("select " ~ billhouse.events_last_block() ~ ", " ~ billhouse.events_table_uuid()) %}
        {%- do scan.update({'through': store.columns[0].values()[0] | int, 'uuid': store.columns[1].values()[0]}) %}
        {%- if is_incremental() %}
            {%- set previous = run_query(
                "select max(scanned_through_block), argMax(events_table_uuid, scanned_through_block)"
                ~ " from " ~ this ~ " where " ~ marker_condition
            ) %}
            {%- if previous.columns[1].values()[0] == scan.uuid %}
                {%- do scan.update({'from': previous.columns[0].values()[0] | int}) %}
            {%- endif %}
        {%- endif %}
    {%- endif %}
    {{ return(scan) }}
{%- endmacro %}


{#- ClickHouse pre-hook of an incremental log model: a table the store created with
    another engine (before the log was compacted by its merges) is copied once into one
    with the model's configured `engine` and `order_by`, rows kept, so that the log
    appends to the new engine. Nothing on a first build or when the engine is already
    the configured one. -#}
{% macro upgrade_log_engine() -%}
    {%- if execute and is_incremental() -%}
        {%- set engine = config.get('engine') -%}
        {%- set found = run_query(
            "select engine from system.tables where database = '" ~ this.schema
            ~ "' and name = '" ~ this.identifier ~ "'") -%}
        {%- if found.rows and found.columns[0].values()[0] != engine.split('(')[0] -%}
            {%- set copy = this.incorporate(path={'identifier': this.identifier ~ '__upgraded'}) -%}
            {%- do run_query("drop table if exists " ~ copy) -%}
            {%- do run_query("create table " ~ copy ~ " engine = " ~ engine ~ " order by " ~ config.get('order_by')
                ~ " as select * from " ~ this) -%}
            {%- do run_query("exchange tables " ~ this ~ " and " ~ copy) -%}
            {%- do run_query("drop table " ~ copy ~ " sync") -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
