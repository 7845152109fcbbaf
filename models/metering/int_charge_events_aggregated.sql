{#-
    The event grain aggregated once: one row per closed period, charge, filter and group
    that has events, with every aggregation's units (the charge's metric picks one in
    int_usage_aggregated). The only full pass over the events of a close; the views it
    reads (int_charge_events_assigned, int_events_deduplicated) are not materialized.
-#}
with assigned as (
    select * from {{ ref('int_charge_events_assigned') }}
),

{#- Each aggregation sees the values of its own metrics only (null elsewhere), and an
    aggregation no metric of the catalog uses is not computed at all (catalog_features):
    the decimal arithmetic of unused aggregations is not paid on every event. -#}
{%- set used = billhouse.catalog_features()['aggregation_types'] -%}
{%- set value_of = {} -%}
{%- for aggregation in ['sum_agg', 'max_agg', 'latest_agg', 'weighted_sum_agg', 'custom_agg'] -%}
    {%- do value_of.update({aggregation: "case when assigned.aggregation_type = '" ~ aggregation ~ "' then assigned.event_value end"}) -%}
{%- endfor %}
{%- set unused = 'cast(null as ' ~ billhouse.nullable_decimal_type() ~ ')' %}

final as (
    select
        assigned.subscription_period_key as subscription_period_key,
        assigned.charge_id as charge_id,
        assigned.filter_index as filter_index,
        assigned.group_key as group_key,
        sum(assigned.in_period) as event_count,
        {{ billhouse.count_agg('assigned.in_period') }} as count_units,
        {% if 'sum_agg' in used %}{{ billhouse.sum_agg(value_of['sum_agg'], 'assigned.in_period', 'assigned.recurring') }}{% else %}{{ unused }}{% endif %} as sum_units,
        {% if 'max_agg' in used %}{{ billhouse.max_agg(value_of['max_agg'], 'assigned.in_period') }}{% else %}{{ unused }}{% endif %} as max_units,
        {% if 'latest_agg' in used %}{{ billhouse.latest_agg(value_of['latest_agg'], 'assigned.in_period', 'assigned.event_at', 'assigned.ingested_at', 'assigned.transaction_id') }}{% else %}{{ unused }}{% endif %}
            as latest_units,
        {% if 'weighted_sum_agg' in used %}{{ billhouse.weighted_sum_agg(
            value_of['weighted_sum_agg'], 'assigned.in_period', 'assigned.recurring',
            'assigned.event_at', 'assigned.period_start', 'assigned.period_end'
        ) }}{% else %}{{ unused }}{% endif %} as weighted_sum_units,
        {% if 'custom_agg' in used %}{{ billhouse.custom_agg(value_of['custom_agg'], 'assigned.in_period', 'assigned.recurring') }}{% else %}{{ unused }}{% endif %} as custom_units
    from assigned
    group by
        assigned.subscription_period_key,
        assigned.charge_id,
        assigned.filter_index,
        assigned.group_key
)

select * from final
