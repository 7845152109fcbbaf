{#- Each event once: of the copies of one (external_subscription_id, transaction_id),
    the first accepted wins and later copies are ignored (semantics.md). A view: the
    events of keys stored once pass straight through, the copies of the few keys in
    int_event_identities_duplicated are ranked, so the close reads the event grain once,
    where it aggregates it, instead of copying it. -#}
{{ config(materialized='view') }}

with events as (
    select * from {{ ref('stg_billhouse__events') }}
),

duplicated_keys as (
    select identity_hash from {{ ref('int_event_identities_duplicated') }} where copies > 1
),

single_copies as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at,
        property_numbers
    from events
    where identity_hash not in (select identity_hash from duplicated_keys)
),

ranked_copies as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at,
        property_numbers,
        {{ billhouse.event_copy_number() }} as copy_number
    from events
    where identity_hash in (select identity_hash from duplicated_keys)
),

first_copies as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at,
        property_numbers
    from ranked_copies
    where copy_number = 1
),

final as (
    select * from single_copies
    union all
    select * from first_copies
)

select * from final
