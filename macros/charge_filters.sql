{#-
    The charge filter each event matches: the first filter (lowest filter_index) all of
    whose keys the event's properties match (a key matches when its value is one of the
    filter's accepted values). One row per (subscription_period_key, charge_id,
    transaction_id) that matches a filter; an event matching none has no row (it is
    priced by the charge's default properties, filter_index -1).

    events: a relation or parenthesised subquery with subscription_period_key,
    charge_id, transaction_id and properties; filter_values: stg_billhouse__charge_filter_values.
    Shared by int_charge_events_assigned (arrears) and int_pay_in_advance_events.
-#}
{% macro first_matching_filter(events, filter_values) -%}
    select
        matches.subscription_period_key as subscription_period_key,
        matches.charge_id as charge_id,
        matches.transaction_id as transaction_id,
        min(matches.filter_index) as filter_index
    from (
        select
            charge_events.subscription_period_key as subscription_period_key,
            charge_events.charge_id as charge_id,
            charge_events.transaction_id as transaction_id,
            accepted.filter_index as filter_index,
            count(distinct accepted.property_key) as matched_keys
        from {{ events }} as charge_events
        inner join {{ filter_values }} as accepted
            on charge_events.charge_id = accepted.charge_id
        where {{ billhouse.property_text('charge_events.properties', 'accepted.property_key') }}
                = accepted.accepted_value
        group by
            charge_events.subscription_period_key,
            charge_events.charge_id,
            charge_events.transaction_id,
            accepted.filter_index
    ) as matches
    inner join (
        select
            charge_id,
            filter_index,
            count(distinct property_key) as key_count
        from {{ filter_values }}
        group by charge_id, filter_index
    ) as key_counts
        on matches.charge_id = key_counts.charge_id
        and matches.filter_index = key_counts.filter_index
    where matches.matched_keys = key_counts.key_count
    group by
        matches.subscription_period_key,
        matches.charge_id,
        matches.transaction_id
{%- endmacro %}
