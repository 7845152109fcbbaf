{#-
    The event grain aggregated once: one row per closed period, charge, filter and group
    that has events, with every aggregation's units (the charge's metric picks one in
    int_usage_aggregated). The only full pass over the events of a close; the views it
    reads (int_charge_events_assigned, int_events_deduplicated) are not materialized.

    Two paths, for disjoint sets of period charges (int_billing_period_charges):
    - rated_by_bucket: the events are aggregated per subscription, metric and bucket
      (the span between two consecutive period bounds of the close, macros/event_buckets.sql)
      and the buckets inside each period summed — no event is joined to its period; on
      ClickHouse the whole days of a bucket come from the day totals kept at insert
      (macros/event_day_totals.sql), so most events are not read at all;
    - the others: each event joined to its period, filter and group
      (int_charge_events_assigned), then aggregated.
    Both use the aggregation macros: a bucket row counts its events and carries the sum
    or the maximum of their values, as an event row counts 1 and carries its value.
-#}
-- depends_on: {{ ref('int_events_deduplicated') }}, {{ ref('stg_billhouse__subscriptions') }}
-- depends_on: {{ ref('int_event_identities_duplicated') }}, {{ ref('stg_billhouse__events') }}
-- depends_on: {{ source('billhouse', 'event_day_totals') }}, {{ source('billhouse', 'event_month_totals') }}
{%- set features = billhouse.catalog_features() -%}
{%- set used = features['aggregation_types'] -%}
{%- set bucket_bounds = billhouse.event_bucket_bounds(ref('int_billing_period_charges')) -%}
{%- set bucket_metrics = [] -%}
{#- Whether the bucket scan names the closing subscriptions: it does when they are fewer
    than half of all subscriptions (a one-timezone close, a day when few periods end),
    so that the primary key skips the others' events; when most close, the test per
    event would cost more (a set lookup per event) than the few others' events it spares
    — the join to the periods drops those either way. -#}
{%- set scan_closing_subscriptions_only = true -%}
{%- if execute and bucket_bounds -%}
    {%- set bucket_metrics = run_query(
        "select distinct billable_metric_code, aggregation_type, field_name from " ~ ref('int_billing_period_charges')
        ~ " where rated_by_bucket and aggregation_type <> 'count_agg' order by billable_metric_code"
    ).rows -%}
    {%- set fewer_than_half = run_query(
        "select (select count(distinct external_subscription_id) from " ~ ref('int_billing_period_charges')
        ~ " where rated_by_bucket) * 2 < (select count(*) from " ~ ref('stg_billhouse__subscriptions') ~ ") as fewer_than_half"
    ).rows[0][0] -%}
    {%- set scan_closing_subscriptions_only = (fewer_than_half | int) == 1 -%}
{%- endif %}

with assigned as (
    select * from {{ ref('int_charge_events_assigned') }}
),

{#- Each aggregation sees the values of its own metrics only (null elsewhere), and an
    aggregation no metric of the catalog uses is not computed at all (catalog_features):
    the decimal arithmetic of unused aggregations is not paid on every event. -#}
{%- set value_of = {} -%}
{%- for aggregation in ['sum_agg', 'max_agg', 'latest_agg', 'weighted_sum_agg', 'custom_agg'] -%}
    {%- do value_of.update({aggregation: "case when assigned.aggregation_type = '" ~ aggregation ~ "' then assigned.event_value end"}) -%}
{%- endfor %}
{%- set unused = 'cast(null as ' ~ billhouse.nullable_decimal_type() ~ ')' %}

event_rows as (
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
){% if bucket_bounds %},

bucket_period_charges as (
    select
        period_charges.*,
        {{ billhouse.event_bucket('period_charges.period_start', bucket_bounds) }} as first_bucket,
        {{ billhouse.event_bucket('period_charges.period_end', bucket_bounds) }} as end_bucket
    from {{ ref('int_billing_period_charges') }} as period_charges
    where period_charges.rated_by_bucket
),

{#- Whether an identity is stored more than once: if none is, the bucket scan reads the
    events as stored (macro any_identity_resent). -#}
{%- set any_resent = billhouse.any_identity_resent() %}

events as (
    select * from {{ ref('int_events_deduplicated') if any_resent else ref('stg_billhouse__events') }}
),

{#- Per subscription, metric and bucket: the event count and, for the metrics summed
    (maximised), the sum (maximum) of their field, the field of each metric being known
    at compile time. When the metrics of an aggregation all read one field, the field is
    aggregated over their rows (macro bucket_aggregate: on ClickHouse an -If combinator,
    about a tenth of the event pass cheaper than a CASE per event); otherwise each
    metric's field is picked by a CASE on the metric.

    On ClickHouse the days wholly inside one bucket are read from the day totals kept at
    insert (macros/event_day_totals.sql), a few rows per subscription and metric instead
    of every event: the events themselves are read only on the days a bound cuts and on
    the days of resent events (the totals count every copy; int_events_deduplicated
    keeps the first). Event rows read the numbers parsed at insert (macro event_number),
    day rows their sum or maximum of the day. The days calendar billing cuts are a
    month's first and last UTC days, each its own partition of the raw events
    (raw_tables.EVENTS_PARTITION_KEY): their constant bounds below read those partitions
    only. -#}
{%- set day_totals = billhouse.reads_event_day_totals() %}
{%- set cut_days = billhouse.days_cut_by(bucket_bounds) if day_totals else [] %}
{%- set metrics_of = {'sum_agg': [], 'max_agg': []} %}
{%- for row in bucket_metrics %}
    {%- do metrics_of[row[1]].append({'code': row[0] | replace("'", "''"), 'field': row[2] | replace("'", "''")}) %}
{%- endfor %}
{%- set rows_of = {
    'events': {'code': 'events.billable_metric_code'},
    'totals': {'code': 'totals.code', 'sum_agg': 'totals.number_sums', 'max_agg': 'totals.number_maxes'},
} %}
{%- set bucket_value = {'events': {}, 'totals': {}} %}
{%- for kind, columns in rows_of.items() %}
{%- for aggregation, metrics in metrics_of.items() %}
    {%- set function = {'sum_agg': 'sum', 'max_agg': 'max'}[aggregation] %}
    {%- set fields = metrics | map(attribute='field') | unique | list %}
    {%- set number_of = {} %}
    {%- for field in fields %}
        {%- do number_of.update({field: billhouse.event_number('events', "'" ~ field ~ "'") if kind == 'events'
            else billhouse.day_total_number(columns[aggregation], "'" ~ field ~ "'")}) %}
    {%- endfor %}
    {%- if not metrics %}
        {%- do bucket_value[kind].update({aggregation: unused}) %}
    {%- elif fields | length == 1 %}
        {%- do bucket_value[kind].update({aggregation: billhouse.bucket_aggregate(
            function, number_of[fields[0]],
            columns['code'] ~ " in ('" ~ (metrics | map(attribute='code') | join("', '")) ~ "')") }) %}
    {%- else %}
        {%- set whens = [] %}
        {%- for metric in metrics %}
            {%- do whens.append("when '" ~ metric.code ~ "' then " ~ number_of[metric.field]) %}
        {%- endfor %}
        {%- do bucket_value[kind].update({aggregation: function ~ '(case ' ~ columns['code'] ~ ' ' ~ (whens | join(' ')) ~ ' end)'}) %}
    {%- endif %}
{%- endfor %}
{%- endfor %}
{%- set reads_events = not day_totals or cut_days or any_resent %}
{%- if day_totals and any_resent %}

{#- every (subscription, metric, day) holding a copy of a resent event in the buckets -#}
resent_days as (
    {%- set in_buckets -%}
        resent.event_at >= {{ billhouse.instant_from_epoch_milliseconds(bucket_bounds[0]) }}
        and resent.event_at < {{ billhouse.instant_from_epoch_milliseconds(bucket_bounds[-1]) }}
    {%- endset %}
    {{ billhouse.resent_event_days('day', in_buckets) }}
),
{%- endif %}
{%- if reads_events %}

event_row_buckets as (
    select
        events.external_subscription_id as external_subscription_id,
        events.billable_metric_code as billable_metric_code,
        {{ billhouse.event_bucket('events.event_at', bucket_bounds) }} as bucket,
        count(*) as event_count,
        {{ bucket_value['events']['sum_agg'] }} as value_sum,
        {{ bucket_value['events']['max_agg'] }} as value_max
    from events
    where events.billable_metric_code in (select billable_metric_code from bucket_period_charges)
        {%- if scan_closing_subscriptions_only %}
        and events.external_subscription_id in (select external_subscription_id from bucket_period_charges)
        {%- endif %}
        -- constants: the scan reads only the months (partitions) between the first and last bound
        and events.event_at >= {{ billhouse.instant_from_epoch_milliseconds(bucket_bounds[0]) }}
        and events.event_at < {{ billhouse.instant_from_epoch_milliseconds(bucket_bounds[-1]) }}
        {%- if day_totals %}
        -- the days the day totals do not hold (constants too: a month's first and last
        -- days are partitions of their own)
        and (
            {%- for day in cut_days %}
            (events.event_at >= {{ billhouse.instant_from_epoch_milliseconds(day) }}
                and events.event_at < {{ billhouse.instant_from_epoch_milliseconds(day + 86400000) }}) or
            {%- endfor %}
            {%- if any_resent %}
            (events.external_subscription_id, events.billable_metric_code, {{ billhouse.utc_date('events.event_at') }})
                in (select external_subscription_id, billable_metric_code, day from resent_days)
            {%- else %}
            false
            {%- endif %}
        )
        {%- endif %}
    group by
        external_subscription_id,
        billable_metric_code,
        bucket
),
{%- endif %}
{%- if day_totals %}
{%- set first_day = billhouse.midnight_at_or_after(bucket_bounds[0]) %}
{%- set end_day = billhouse.midnight_at_or_before(bucket_bounds[-1]) %}
{#- The months whose middle days share one bucket come from the month totals, a row per
    subscription, metric and month instead of a row per day (macro whole_month_middles),
    but for the (subscription, metric, month) holding a resent event's day: those read
    their days as above. The day totals keep a month's middle days in a partition of
    their own, which the close then does not read. -#}
{%- set whole_months = billhouse.whole_month_middles(first_day, end_day, bucket_bounds) %}
{%- set whole_month_dates -%}
    {%- for month in whole_months %}{{ billhouse.utc_date(billhouse.instant_from_epoch_milliseconds(month)) }}{% if not loop.last %}, {% endif %}{% endfor -%}
{%- endset %}
{%- if whole_months and any_resent %}

resent_months as (
    select distinct external_subscription_id, billable_metric_code, toStartOfMonth(day) as month
    from resent_days
    where toStartOfMonth(day) in ({{ whole_month_dates }})
),
{%- endif %}

day_rows as (
    select
        totals.external_subscription_id as external_subscription_id,
        totals.code as code,
        totals.day as day,
        totals.event_count as event_count,
        totals.number_sums as number_sums,
        totals.number_maxes as number_maxes
    from {{ source('billhouse', 'event_day_totals') }} as totals
    where totals.code in (select billable_metric_code from bucket_period_charges)
        {%- if scan_closing_subscriptions_only %}
        and totals.external_subscription_id in (select external_subscription_id from bucket_period_charges)
        {%- endif %}
        -- the whole days between the first and the last bound
        and totals.day >= {{ billhouse.utc_date(billhouse.instant_from_epoch_milliseconds(first_day)) }}
        and totals.day < {{ billhouse.utc_date(billhouse.instant_from_epoch_milliseconds(end_day)) }}
        {%- if cut_days %}
        and totals.day not in (
            {%- for day in cut_days %}{{ billhouse.utc_date(billhouse.instant_from_epoch_milliseconds(day)) }}{% if not loop.last %}, {% endif %}{% endfor -%}
        )
        {%- endif %}
        {%- if any_resent %}
        and (totals.external_subscription_id, totals.code, totals.day)
            not in (select external_subscription_id, billable_metric_code, day from resent_days)
        {%- endif %}
        {%- if whole_months %}
        -- the middle days the month totals give
        and not (
            toStartOfMonth(totals.day) in ({{ whole_month_dates }})
            and {{ billhouse.month_middle_day('totals.day') }}
            {%- if any_resent %}
            and (totals.external_subscription_id, totals.code, toStartOfMonth(totals.day))
                not in (select external_subscription_id, billable_metric_code, month from resent_months)
            {%- endif %}
        )
        {%- endif %}
    {%- if whole_months %}
    union all
    select
        months.external_subscription_id as external_subscription_id,
        months.code as code,
        -- the month's first middle day: the bucket of all of them
        addDays(months.month, 1) as day,
        months.event_count as event_count,
        months.number_sums as number_sums,
        months.number_maxes as number_maxes
    from {{ source('billhouse', 'event_month_totals') }} as months
    where months.code in (select billable_metric_code from bucket_period_charges)
        {%- if scan_closing_subscriptions_only %}
        and months.external_subscription_id in (select external_subscription_id from bucket_period_charges)
        {%- endif %}
        and months.month in ({{ whole_month_dates }})
        {%- if any_resent %}
        and (months.external_subscription_id, months.code, months.month)
            not in (select external_subscription_id, billable_metric_code, month from resent_months)
        {%- endif %}
    {%- endif %}
),

day_buckets as (
    select
        totals.external_subscription_id as external_subscription_id,
        totals.code as billable_metric_code,
        {{ billhouse.day_bucket('totals.day', bucket_bounds) }} as bucket,
        sum(totals.event_count) as event_count,
        {{ bucket_value['totals']['sum_agg'] }} as value_sum,
        {{ bucket_value['totals']['max_agg'] }} as value_max
    from day_rows as totals
    group by
        external_subscription_id,
        billable_metric_code,
        bucket
),
{%- endif %}

{#- one bucket's events may come in two rows (some of its days read from the totals,
    others event by event): period_buckets and bucket_rows sum or maximise over them -#}
event_buckets as (
    {%- if reads_events %}
    select * from event_row_buckets
    {%- endif %}
    {%- if reads_events and day_totals %}
    union all
    {%- endif %}
    {%- if day_totals %}
    select * from day_buckets
    {%- endif %}
),

period_buckets as (
    select
        bucket_period_charges.subscription_period_key as subscription_period_key,
        bucket_period_charges.charge_id as charge_id,
        bucket_period_charges.aggregation_type as aggregation_type,
        event_buckets.event_count as event_count,
        case bucket_period_charges.aggregation_type
            when 'sum_agg' then event_buckets.value_sum
            when 'max_agg' then event_buckets.value_max
        end as bucket_value
    from event_buckets
    inner join bucket_period_charges
        on event_buckets.external_subscription_id = bucket_period_charges.external_subscription_id
        and event_buckets.billable_metric_code = bucket_period_charges.billable_metric_code
    where event_buckets.bucket >= bucket_period_charges.first_bucket
        and event_buckets.bucket < bucket_period_charges.end_bucket
),

bucket_rows as (
    select
        period_buckets.subscription_period_key as subscription_period_key,
        period_buckets.charge_id as charge_id,
        -1 as filter_index,
        '' as group_key,
        sum(period_buckets.event_count) as event_count,
        {{ billhouse.count_agg('period_buckets.event_count') }} as count_units,
        {% if 'sum_agg' in used %}{{ billhouse.sum_agg("case when period_buckets.aggregation_type = 'sum_agg' then period_buckets.bucket_value end", '1', 'false') }}{% else %}{{ unused }}{% endif %} as sum_units,
        {% if 'max_agg' in used %}{{ billhouse.max_agg("case when period_buckets.aggregation_type = 'max_agg' then period_buckets.bucket_value end", '1') }}{% else %}{{ unused }}{% endif %} as max_units,
        {{ unused }} as latest_units,
        {{ unused }} as weighted_sum_units,
        {{ unused }} as custom_units
    from period_buckets
    group by
        period_buckets.subscription_period_key,
        period_buckets.charge_id
){% endif %},

final as (
    select * from event_rows
{%- if bucket_bounds %}
    union all
    select * from bucket_rows
{%- endif %}
)

select * from final
