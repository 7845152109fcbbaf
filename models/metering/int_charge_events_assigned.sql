{#-
    Every deduplicated event that a usage charge of a closed period prices event by
    event (not rated_by_bucket, see int_billing_period_charges), with the bucket it
    falls in: the charge filter it matches (the first filter all of whose keys
    match; -1 = the charge's default properties) and its group ('' without grouped_by).
    Recurring metrics also carry the events before the period (in_period = 0), whose
    values carry over. The event scan is bounded by the closing periods (their earliest
    start, unless a recurring metric closes, and latest end), so a close reads only the
    months of raw events (partitions) its periods cover.

    A view, read once per close by int_charge_events_aggregated (and, restricted to
    their metrics' events, by the unique-count and percentage models). What the catalog
    does not use (filters, grouped_by, unique counts: catalog_features) is left out of
    the SQL, so an event costs only the reads its charges need.
-#}
{{ config(materialized='view') }}
{%- set features = billhouse.catalog_features() -%}
{%- set counts_uniques = 'unique_count_agg' in features['aggregation_types'] %}
{#- Recurring metrics carry values over from before the period: without them, no event
    before the earliest closing period is read (the scan bounds below). -#}
{%- set carries_over = {'any': true} %}
{%- if execute %}
    {%- set recurring = run_query("select count(*) from " ~ ref('int_billing_period_charges') ~ " where recurring") %}
    {%- do carries_over.update({'any': recurring.columns[0].values()[0] | int > 0}) %}
{%- endif %}

with period_charges as (
    select * from {{ ref('int_billing_period_charges') }}
    where not rated_by_bucket
),

filter_values as (
    select * from {{ ref('stg_billhouse__charge_filter_values') }}
),

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

{#- Charges without filters (the common case) skip the filter matching entirely; a
    charge with filters matches each of its events against its filters' values. -#}
{%- for branch, condition in [('unfiltered', '= 0'), ('filtered', '> 0')] %}
{%- if branch == 'unfiltered' or features['has_filters'] %}

{{ branch }}_charge_events as (
    select
        period_charges.subscription_period_key as subscription_period_key,
        period_charges.charge_id as charge_id,
        period_charges.billable_metric_code as billable_metric_code,
        period_charges.aggregation_type as aggregation_type,
        period_charges.field_name as field_name,
        period_charges.grouped_by as grouped_by,
        period_charges.recurring as recurring,
        period_charges.period_start as period_start,
        period_charges.period_end as period_end,
        events.transaction_id as transaction_id,
        events.event_at as event_at,
        events.ingested_at as ingested_at,
        events.properties as properties,
        events.property_numbers as property_numbers
    from events
    inner join period_charges
        on events.external_subscription_id = period_charges.external_subscription_id
        and events.billable_metric_code = period_charges.billable_metric_code
    where period_charges.filter_count {{ condition }}
        -- columns of the events, so that the scan skips the events of subscriptions not
        -- closing now (a one-timezone close) and of other metrics before joining
        and events.external_subscription_id in (select external_subscription_id from period_charges)
        and events.billable_metric_code in (
            select billable_metric_code from period_charges where filter_count {{ condition }}
        )
        and events.event_at < period_charges.period_end
        and (period_charges.recurring or events.event_at >= period_charges.period_start)
        -- constant bounds (scalar subqueries are evaluated first): the scan skips the
        -- months of the raw events (one partition each) outside the closing periods
        and events.event_at < (select max(period_end) from period_charges)
        {%- if not carries_over['any'] %}
        and events.event_at >= (select min(period_start) from period_charges)
        {%- endif %}
),
{%- endif %}
{%- endfor %}
{%- if features['has_filters'] %}

first_matching_filter as (
    {{ billhouse.first_matching_filter('filtered_charge_events', 'filter_values') }}
),
{%- endif %}

charge_events as (
    select
        unfiltered_charge_events.*,
        -1 as filter_index
    from unfiltered_charge_events
{%- if features['has_filters'] %}
    union all
    select
        filtered_charge_events.*,
        coalesce(first_matching_filter.filter_index, -1) as filter_index
    from filtered_charge_events
    left join first_matching_filter
        on filtered_charge_events.subscription_period_key = first_matching_filter.subscription_period_key
        and filtered_charge_events.charge_id = first_matching_filter.charge_id
        and filtered_charge_events.transaction_id = first_matching_filter.transaction_id
{%- endif %}
),

final as (
    select
        charge_events.subscription_period_key as subscription_period_key,
        charge_events.charge_id as charge_id,
        charge_events.billable_metric_code as billable_metric_code,
        charge_events.aggregation_type as aggregation_type,
        charge_events.recurring as recurring,
        charge_events.period_start as period_start,
        charge_events.period_end as period_end,
        charge_events.filter_index as filter_index,
        {% if features['has_grouped_by'] -%}
        case
            when charge_events.grouped_by = '[]' then ''
            else {{ billhouse.group_key('charge_events.properties', 'charge_events.grouped_by') }}
        end
        {%- else -%}
        ''
        {%- endif %} as group_key,
        charge_events.transaction_id as transaction_id,
        charge_events.event_at as event_at,
        charge_events.ingested_at as ingested_at,
        case when charge_events.event_at >= charge_events.period_start then 1 else 0 end as in_period,
        case charge_events.aggregation_type
            when 'count_agg' then {{ billhouse.to_decimal('1') }}
            when 'custom_agg' then {{ billhouse.custom_expression_case('charge_events.billable_metric_code') }}
            else {{ billhouse.event_number('charge_events', 'charge_events.field_name') }}
        end as event_value,
        {% if counts_uniques -%}
        case
            when charge_events.aggregation_type = 'unique_count_agg'
            then {{ billhouse.property_text('charge_events.properties', 'charge_events.field_name') }}
        end
        {%- else -%}
        {{ billhouse.null_string() }}
        {%- endif %} as distinct_value,
        {% if counts_uniques -%}
        case
            when charge_events.aggregation_type = 'unique_count_agg'
                and {{ billhouse.property_text('charge_events.properties', "'operation_type'") }} = 'remove'
            then 'remove'
            else 'add'
        end
        {%- else -%}
        'add'
        {%- endif %} as operation_type
    from charge_events
)

select * from final
