{#-
    The events per-event fees are priced on: every deduplicated event of a per-event
    charge (int_pay_in_advance_charges) in the charge periods of int_pay_in_advance_periods
    whose fee closes by as_of, with its bucket — the first charge filter all of whose
    keys it matches (-1 = the default properties) and its group, as in
    int_charge_events_assigned — and its place in the bucket.

    Order within a bucket: by issuing date (the first local midnight after the event
    both happened and arrived), then event_at, ingested_at, transaction_id. Events billed
    by the same close are thus in time order, and an event arriving after an earlier
    close comes after everything that close billed, so a fee once billed never changes
    and the fees of a period add up to the amount of its peak (docs/billing-clock.md).
    An event's priced units are the bucket's peak units through it and before it: the
    highest cumulative units so far (rounding_function applied, a negative total
    counting as 0). An event that lowers the running units (a negative sum_agg value)
    thus adds no priced units, and later events add units only above the peak: no fee
    is negative and no unit is billed twice in a period, as in Lago (a lowered total
    is not refunded; docs/billing-clock.md, "Negative usage").
-#}
{{ config(meta={'customer_timezones': ['close_timezone', 'with_per_event_charges']}) }}
{#- built empty without a per-event charge in the catalog (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.relation_has_rows(ref('int_pay_in_advance_charges'))) %}
with periods as (
    select * from {{ ref('int_pay_in_advance_periods') }}
),

per_event_charges as (
    select * from {{ ref('int_pay_in_advance_charges') }}
),

filter_values as (
    select * from {{ ref('stg_billhouse__charge_filter_values') }}
),

events as (
    select * from {{ ref('int_events_deduplicated') }}
    {%- if not billhouse.relation_has_rows(ref('int_pay_in_advance_charges')) %}
    -- no per-event charge in the catalog: not an event is read
    where false
    {%- endif %}
),

period_charges as (
    select
        periods.subscription_period_key as subscription_period_key,
        periods.external_subscription_id as external_subscription_id,
        periods.timezone as timezone,
        periods.period_start as period_start,
        periods.period_end as period_end,
        per_event_charges.charge_id as charge_id,
        per_event_charges.billable_metric_code as billable_metric_code,
        per_event_charges.aggregation_type as aggregation_type,
        per_event_charges.field_name as field_name,
        per_event_charges.grouped_by as grouped_by,
        per_event_charges.filter_count as filter_count,
        per_event_charges.rounding_function as rounding_function,
        per_event_charges.rounding_precision as rounding_precision
    from periods
    inner join per_event_charges
        on periods.plan_code = per_event_charges.plan_code
),

charge_events as (
    select
        period_charges.*,
        events.transaction_id as transaction_id,
        events.event_at as event_at,
        events.ingested_at as ingested_at,
        events.properties as properties,
        events.property_numbers as property_numbers,
        {{ billhouse.date_add_days(
            billhouse.local_date('greatest(events.event_at, events.ingested_at)', 'period_charges.timezone'), 1) }}
            as issuing_date
    from period_charges
    inner join events
        on period_charges.external_subscription_id = events.external_subscription_id
        and period_charges.billable_metric_code = events.billable_metric_code
    where events.billable_metric_code in (select billable_metric_code from per_event_charges)
        and events.event_at >= period_charges.period_start
        and events.event_at < period_charges.period_end
        and greatest(events.event_at, events.ingested_at) < {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

timed as (
    select
        charge_events.*,
        {{ billhouse.local_midnight('issuing_date', 'timezone') }} as closes_at
    from charge_events
),

known as (
    {#- an event closing after as_of comes after every event billed here: left out -#}
    select * from timed
    where closes_at <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

first_matching_filter as (
    {{ billhouse.first_matching_filter('(select * from known where filter_count > 0)', 'filter_values') }}
),

assigned as (
    select
        known.subscription_period_key as subscription_period_key,
        known.external_subscription_id as external_subscription_id,
        known.period_start as charge_period_start,
        known.period_end as charge_period_end,
        known.charge_id as charge_id,
        coalesce(first_matching_filter.filter_index, -1) as filter_index,
        case
            when known.grouped_by in ('', '[]') then ''
            else {{ billhouse.group_key('known.properties', 'known.grouped_by') }}
        end as group_key,
        known.transaction_id as transaction_id,
        known.event_at as event_at,
        known.ingested_at as ingested_at,
        known.issuing_date as issuing_date,
        known.closes_at as closes_at,
        known.rounding_function as rounding_function,
        known.rounding_precision as rounding_precision,
        {{ billhouse.to_decimal(
            "case known.aggregation_type when 'count_agg' then " ~ billhouse.to_decimal('1')
            ~ " else coalesce(" ~ billhouse.event_number('known', 'known.field_name') ~ ", " ~ billhouse.decimal_zero() ~ ") end"
        ) }} as event_value
    from known
    left join first_matching_filter
        on known.subscription_period_key = first_matching_filter.subscription_period_key
        and known.charge_id = first_matching_filter.charge_id
        and known.transaction_id = first_matching_filter.transaction_id
),

ordered as (
    select
        assigned.*,
        row_number() over (
            partition by subscription_period_key, charge_id, filter_index, group_key
            order by issuing_date, event_at, ingested_at, transaction_id
        ) as event_number,
        sum(event_value) over (
            partition by subscription_period_key, charge_id, filter_index, group_key
            order by issuing_date, event_at, ingested_at, transaction_id
            rows between unbounded preceding and current row
        ) as running_value
    from assigned
),

cumulated as (
    select
        ordered.*,
        {{ billhouse.to_decimal('running_value') }} as cumulative_value,
        {{ billhouse.to_decimal('running_value - event_value') }} as cumulative_value_before,
        -- the units the charge model would price now: rounded, a negative total counting as 0
        {{ billhouse.to_decimal('greatest(' ~ billhouse.to_decimal(billhouse.apply_rounding(
            billhouse.to_decimal('running_value'), 'rounding_function', 'rounding_precision')) ~ ', ' ~ billhouse.decimal_zero() ~ ')') }}
            as running_units
    from ordered
),

peaked as (
    {#- the period's peak so far: before the event (0 before the first) and through it -#}
    select
        cumulated.*,
        max(running_units) over (
            partition by subscription_period_key, charge_id, filter_index, group_key
            order by event_number
            rows between unbounded preceding and 1 preceding
        ) as peak_units_before
    from cumulated
),

final as (
    select
        concat(external_subscription_id, '/', charge_id, '/event/', transaction_id) as fee_key,
        concat(
            subscription_period_key, '/', charge_id, '#', cast(filter_index as {{ dbt.type_string() }}),
            case when group_key = '' then '' else concat('/', group_key) end
        ) as bucket_key,
        subscription_period_key,
        external_subscription_id,
        charge_period_start,
        charge_period_end,
        charge_id,
        filter_index,
        concat(charge_id, '#', cast(filter_index as {{ dbt.type_string() }})) as charge_price_id,
        group_key,
        transaction_id,
        event_at,
        ingested_at,
        issuing_date,
        closes_at,
        cast(event_number as {{ dbt.type_int() }}) as event_number,
        event_value,
        cumulative_value,
        cumulative_value_before,
        -- the units the charge model prices: the peak before the event and through it
        {{ billhouse.to_decimal('coalesce(peak_units_before, ' ~ billhouse.decimal_zero() ~ ')') }} as units_before,
        {{ billhouse.to_decimal('greatest(running_units, coalesce(peak_units_before, ' ~ billhouse.decimal_zero() ~ '))') }}
            as units_after
    from peaked
)

select * from final
{% endcall %}
