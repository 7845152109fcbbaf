{#- A 64-bit hash of an event's identity (external_subscription_id, transaction_id).
    Grouping by it instead of by the two strings halves the cost of finding resent
    events; a collision only sends a single-copy event through the ranking of copies,
    which keeps it (see int_events_deduplicated), so it can never drop an event. -#}
{% macro event_identity_hash(external_subscription_id, transaction_id) -%}
    {{ return(adapter.dispatch('event_identity_hash', 'billhouse')(external_subscription_id, transaction_id)) }}
{%- endmacro %}

{% macro default__event_identity_hash(external_subscription_id, transaction_id) -%}
    {#- the length prefix keeps ('ab', 'c') and ('a', 'bc') apart -#}
    hashtextextended(length({{ external_subscription_id }}) || ':' || {{ external_subscription_id }} || {{ transaction_id }}, 0)
{%- endmacro %}

{% macro clickhouse__event_identity_hash(external_subscription_id, transaction_id) -%}
    cityHash64({{ external_subscription_id }}, {{ transaction_id }})
{%- endmacro %}


{#- The identity hash of a raw event row: on ClickHouse the stored column (MATERIALIZED
    at insert, billhouse/raw_tables.py), elsewhere computed. Both equal
    event_identity_hash(external_subscription_id, transaction_id). -#}
{% macro raw_event_identity_hash() -%}
    {{ return(adapter.dispatch('raw_event_identity_hash', 'billhouse')()) }}
{%- endmacro %}

{% macro default__raw_event_identity_hash() -%}
    {{ billhouse.event_identity_hash('external_subscription_id', 'transaction_id') }}
{%- endmacro %}

{% macro clickhouse__raw_event_identity_hash() -%}
    identity_hash
{%- endmacro %}


{#- The numeric properties of a raw event row: on ClickHouse the stored map (MATERIALIZED
    at insert, billhouse/raw_tables.py); elsewhere nothing (event_number reads the JSON). -#}
{% macro raw_event_property_numbers() -%}
    {{ return(adapter.dispatch('raw_event_property_numbers', 'billhouse')()) }}
{%- endmacro %}

{% macro default__raw_event_property_numbers() -%}
    cast(null as text)
{%- endmacro %}

{% macro clickhouse__raw_event_property_numbers() -%}
    property_numbers
{%- endmacro %}


{#- Which copy of an event identity is the event: copies numbered by acceptance (ingestion
    time, then event time, metric and properties for copies accepted together); copy 1
    wins, later copies are ignored (semantics.md). Over rows with the events' staging
    columns. -#}
{% macro event_copy_number() -%}
    row_number() over (
        partition by external_subscription_id, transaction_id
        order by ingested_at, event_at, billable_metric_code, properties
    )
{%- endmacro %}

