{#- The event identities (external_subscription_id, transaction_id) stored more than
    once, as hashes (macro event_identity_hash). Small (resent events only), so
    int_events_deduplicated passes every other event through untouched and ranks the
    copies of these identities alone, instead of ranking every event of the store. -#}
with events as (
    select * from {{ ref('stg_billhouse__events') }}
),

final as (
    select
        identity_hash,
        count(*) as copies
    from events
    group by identity_hash
    having count(*) > 1
)

select * from final
