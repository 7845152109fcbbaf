{#- maintained by month where events carry insert blocks (ClickHouse); rebuilt elsewhere -#}
{%- if billhouse.events_have_block_numbers() %}
{{ config(
    materialized='incremental',
    incremental_strategy='insert_overwrite',
    partition_by='toYYYYMM(usage_date)',
    order_by='(external_customer_id, billable_metric_code, usage_date)',
    post_hook=[
        "{{ billhouse.clear_stale_usage_months() }}",
        "{{ billhouse.usage_subscription_customers_snapshot(ref('stg_billhouse__subscriptions')) }}",
    ],
    tags=['finance'],
) }}
{%- else %}
{{ config(materialized='table', tags=['finance']) }}
{%- endif %}
{#-
    Usage per customer, billable metric and UTC day, from the deduplicated events. units
    applies the metric's aggregation within the day: count_agg counts events; sum_agg
    and weighted_sum_agg sum the field (no time weighting); max_agg takes the maximum;
    unique_count_agg counts distinct values; latest_agg takes the day's last value (by
    event time, then ingestion time and transaction id, as billing does; 0 when it has
    none); custom_agg has no per-day units (null). Days add up to a period's units only
    for count_agg and sum_agg.

    Refreshed by every close, so an event costs only what its metric needs: the JSON
    properties are parsed for the metrics that read a field, and the latest value is an
    aggregate, not a window over every event. On ClickHouse the mart is maintained month
    by month (macros/finance/usage_months.sql): a build recomputes the UTC days of the
    events loaded since the previous one, copies the other days of their months as built,
    and replaces those months' partitions; everything is recomputed on a first build,
    --full-refresh, a re-created events table or a change of the metrics or of a known
    subscription's customer (not for a new subscription). Every row records the build
    that wrote it (computed_through_block, events_table_uuid, inputs_fingerprint).
    PostgreSQL rebuilds the whole table.
-#}
-- depends_on: {{ ref('stg_billhouse__events') }}
-- depends_on: {{ ref('int_events_deduplicated') }}
-- depends_on: {{ ref('int_event_identities_duplicated') }}
{%- if billhouse.events_have_block_numbers() and execute %}
    {#- a mart built before it was maintained by month (no partitions, no bookkeeping
        columns) cannot take partitions: it is dropped and built again -#}
    {%- set existing = adapter.get_relation(this.database, this.schema, this.identifier) %}
    {%- if existing is not none %}
        {%- set shape = run_query(
            "select (select partition_key from system.tables where database = '" ~ this.schema
            ~ "' and name = '" ~ this.identifier ~ "') in ('toYYYYMM(usage_date)', '(toYYYYMM(usage_date))')"
            ~ " and (select count() from system.columns where database = '" ~ this.schema
            ~ "' and table = '" ~ this.identifier ~ "' and name in"
            ~ " ('computed_through_block', 'events_table_uuid', 'inputs_fingerprint')) = 3 as current_shape"
        ).rows[0]['current_shape'] %}
        {%- if not shape %}
            {%- do adapter.drop_relation(existing) %}
        {%- endif %}
    {%- endif %}
{%- endif %}
{%- set plan = billhouse.usage_months_plan(
    ref('stg_billhouse__billable_metrics'),
    ref('stg_billhouse__subscriptions'),
    ref('int_event_identities_duplicated'),
) %}
{%- set day_totals = billhouse.reads_event_day_totals() %}
{#- no identity stored twice: the events are read as stored, and no day is resent -#}
{%- set any_resent = billhouse.any_identity_resent() %}
{%- set totalled_types = ['count_agg', 'sum_agg', 'weighted_sum_agg', 'max_agg'] %}
{%- if billhouse.events_have_block_numbers() %}
{{ billhouse.usage_months_plan_comment(plan) }}
{% endif %}
{%- if plan.mode == 'full' %}
with events as (
    select * from {{ ref('int_events_deduplicated') if any_resent else ref('stg_billhouse__events') }}
),
{%- else %}
{#- the events of the recomputed days, deduplicated as int_events_deduplicated does
    (the first accepted copy wins: same ranking), without reading the other months: the
    copies of an identity stored more than once are ranked over the whole store, found
    through their subscriptions (the raw table's primary key prefix) -#}
{%- set in_recomputed_days -%}
    {{ billhouse.usage_month_bounds('event_at', plan.months) }}
        and {{ billhouse.usage_day_in(billhouse.utc_date('event_at'), plan.days) }}
{%- endset %}
with events_in_months as (
    select
        transaction_id,
        external_subscription_id,
        billable_metric_code,
        event_at,
        properties,
        ingested_at,
        property_numbers,
        identity_hash
    from {{ ref('stg_billhouse__events') }}
    where {{ in_recomputed_days }}
),
{%- if not any_resent %}

events as (
    select * from events_in_months
),
{%- else %}

duplicated_keys as (
    select identity_hash from {{ ref('int_event_identities_duplicated') }} where copies > 1
),

single_copies as (
    select transaction_id, external_subscription_id, billable_metric_code, event_at, properties, ingested_at, property_numbers
    from events_in_months
    where identity_hash not in (select identity_hash from duplicated_keys)
),

resent_in_months as (
    select identity_hash, external_subscription_id
    from events_in_months
    where identity_hash in (select identity_hash from duplicated_keys)
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
    from {{ ref('stg_billhouse__events') }}
    where external_subscription_id in (select external_subscription_id from resent_in_months)
        and identity_hash in (select identity_hash from resent_in_months)
),

first_copies as (
    select transaction_id, external_subscription_id, billable_metric_code, event_at, properties, ingested_at, property_numbers
    from ranked_copies
    where copy_number = 1 and {{ in_recomputed_days }}
),

events as (
    select * from single_copies
    union all
    select * from first_copies
),
{%- endif %}
{%- endif %}

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),
{%- if day_totals %}

{#- On ClickHouse the days of count, sum, weighted-sum and max metrics come from the day
    totals kept at insert (macros/event_day_totals.sql), except the days holding a copy
    of a resent event (the totals count every copy): those, and the other metrics, are
    read event by event. -#}
totalled_metrics as (
    select billable_metric_code from metrics where aggregation_type in ('{{ totalled_types | join("', '") }}')
),

{%- if any_resent %}

resent_days as (
    {{ billhouse.resent_event_days('usage_date',
        billhouse.usage_month_bounds('resent.event_at', plan.months) if plan.mode != 'full' else 'true') }}
),
{%- endif %}

totalled_days as (
    select
        subscriptions.external_customer_id as external_customer_id,
        totals.code as billable_metric_code,
        totals.day as usage_date,
        metrics.aggregation_type as aggregation_type,
        sum(totals.event_count) as events_count,
        case metrics.aggregation_type
            when 'count_agg' then cast(sum(totals.event_count) as {{ billhouse.nullable_decimal_type() }})
            when 'max_agg' then cast(
                max({{ billhouse.day_total_number('totals.number_maxes', "coalesce(metrics.field_name, '')") }})
                as {{ billhouse.nullable_decimal_type() }}
            )
            else cast(
                coalesce(sum({{ billhouse.day_total_number('totals.number_sums', "coalesce(metrics.field_name, '')") }}), 0)
                as {{ billhouse.nullable_decimal_type() }}
            )
        end as units
    from {{ source('billhouse', 'event_day_totals') }} as totals
    inner join subscriptions
        on totals.external_subscription_id = subscriptions.external_subscription_id
    inner join metrics
        on totals.code = metrics.billable_metric_code
    where totals.code in (select billable_metric_code from totalled_metrics)
        {%- if plan.mode != 'full' %}
        and {{ billhouse.usage_month_in('totals.day', plan.months) }}
        and {{ billhouse.usage_day_in('totals.day', plan.days) }}
        {%- endif %}
        {%- if any_resent %}
        and (totals.external_subscription_id, totals.code, totals.day)
            not in (select external_subscription_id, billable_metric_code, usage_date from resent_days)
        {%- endif %}
    group by external_customer_id, billable_metric_code, usage_date, aggregation_type
),
{%- endif %}

event_values as (
    select
        subscriptions.external_customer_id as external_customer_id,
        events.billable_metric_code as billable_metric_code,
        metrics.aggregation_type as aggregation_type,
        {{ billhouse.utc_date('events.event_at') }} as usage_date,
        events.event_at as event_at,
        events.ingested_at as ingested_at,
        events.transaction_id as transaction_id,
        case
            when metrics.aggregation_type in ('sum_agg', 'weighted_sum_agg', 'max_agg', 'latest_agg')
            then {{ billhouse.event_number('events', "coalesce(metrics.field_name, '')") }}
        end as field_value,
        case
            when metrics.aggregation_type = 'unique_count_agg'
            then {{ billhouse.property_text('events.properties', "coalesce(metrics.field_name, '')") }}
        end as field_text
    from events
    inner join subscriptions
        on events.external_subscription_id = subscriptions.external_subscription_id
    inner join metrics
        on events.billable_metric_code = metrics.billable_metric_code
    {%- if day_totals %}
    where events.billable_metric_code not in (select billable_metric_code from totalled_metrics)
        {%- if any_resent %}
        or (events.external_subscription_id, events.billable_metric_code, {{ billhouse.utc_date('events.event_at') }})
            in (select external_subscription_id, billable_metric_code, usage_date from resent_days)
        {%- endif %}
    {%- endif %}
),

recomputed as (
    select
        external_customer_id,
        billable_metric_code,
        usage_date,
        aggregation_type,
        count(*) as events_count,
        case aggregation_type
            when 'count_agg' then cast(count(*) as {{ billhouse.nullable_decimal_type() }})
            when 'sum_agg' then cast(coalesce(sum(field_value), 0) as {{ billhouse.nullable_decimal_type() }})
            when 'weighted_sum_agg' then cast(coalesce(sum(field_value), 0) as {{ billhouse.nullable_decimal_type() }})
            when 'max_agg' then cast(max(field_value) as {{ billhouse.nullable_decimal_type() }})
            when 'unique_count_agg' then cast(count(distinct field_text) as {{ billhouse.nullable_decimal_type() }})
            when 'latest_agg' then cast(
                {{ billhouse.latest_agg('field_value', '1', 'event_at', 'ingested_at', 'transaction_id') }}
                as {{ billhouse.nullable_decimal_type() }}
            )
        end as units
    from event_values
    group by external_customer_id, billable_metric_code, usage_date, aggregation_type
),
{%- if day_totals %}

{#- a customer's day may come from both (one subscription's resent event, another's
    totals): counts and sums add up, maxima take the larger -#}
recomputed_days as (
    select
        external_customer_id,
        billable_metric_code,
        usage_date,
        aggregation_type,
        sum(events_count) as events_count,
        case
            when aggregation_type = 'max_agg' then max(units)
            when aggregation_type in ('{{ totalled_types | join("', '") }}') then sum(units)
            else max(units)
        end as units
    from (
        select external_customer_id, billable_metric_code, usage_date, aggregation_type, events_count, units
        from recomputed
        union all
        select external_customer_id, billable_metric_code, usage_date, aggregation_type, events_count, units
        from totalled_days
    ) as both_sources
    group by external_customer_id, billable_metric_code, usage_date, aggregation_type
),
{%- endif %}
{%- if plan.mode == 'months' %}

-- the replaced months' other days, as the mart holds them: no event of theirs changed
kept_days as (
    select external_customer_id, billable_metric_code, usage_date, aggregation_type, events_count, units
    from {{ this }}
    where {{ billhouse.usage_month_in('usage_date', plan.months) }}
        and not {{ billhouse.usage_day_in('usage_date', plan.days) }}
),
{%- endif %}

final as (
    {%- set recomputed_rows = 'recomputed_days' if day_totals else 'recomputed' %}
    {%- for rows in ([recomputed_rows, 'kept_days'] if plan.mode == 'months' else [recomputed_rows]) %}
    select
        external_customer_id,
        billable_metric_code,
        usage_date,
        aggregation_type,
        events_count,
        units,
        {%- if billhouse.events_have_block_numbers() %}
        -- the build that wrote the row: max(computed_through_block) is the mart's watermark
        -- (a kept day is current through it too)
        toUInt64('{{ plan.through_block }}') as computed_through_block,
        '{{ plan.events_table_uuid }}' as events_table_uuid,
        toUInt64('{{ plan.inputs_fingerprint }}') as inputs_fingerprint
        {%- else %}
        cast(0 as bigint) as computed_through_block,
        '' as events_table_uuid,
        cast(0 as bigint) as inputs_fingerprint
        {%- endif %}
    from {{ rows }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
)

select * from final
