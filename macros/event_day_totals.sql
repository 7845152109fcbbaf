{#-
    Each day's totals of the raw events (ClickHouse: the source event_day_totals, kept at
    insert by a materialized view, billhouse/event_day_totals.py): per subscription, code
    and UTC day, the count of stored events and the sum and maximum of each numeric
    property. int_charge_events_aggregated reads them for the days wholly inside one
    bucket and free of resent events.
-#}

{#- Whether the close reads the day totals: on ClickHouse, unless the close setting
    read_event_day_totals is 'false' (every event read, to compare both ways). -#}
{% macro reads_event_day_totals() -%}
    {{ return(adapter.dispatch('reads_event_day_totals', 'billhouse')()) }}
{%- endmacro %}

{% macro default__reads_event_day_totals() -%}
    {{ return(false) }}
{%- endmacro %}

{% macro clickhouse__reads_event_day_totals() -%}
    {{ return(billhouse.close_setting('read_event_day_totals') | string | lower != 'false') }}
{%- endmacro %}


{#- The UTC days (epoch milliseconds of their midnight, sorted) that a bound cuts: a
    bound after their midnight falls inside them. -#}
{% macro days_cut_by(bounds) -%}
    {%- set day_milliseconds = 86400000 -%}
    {%- set days = [] -%}
    {%- for bound in bounds if bound % day_milliseconds != 0 -%}
        {%- set day = bound - bound % day_milliseconds -%}
        {%- if day not in days -%}
            {%- do days.append(day) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(days | sort) }}
{%- endmacro %}


{#- The first UTC midnight at or after `instant` (epoch milliseconds), and the last at or
    before it. -#}
{% macro midnight_at_or_after(instant) -%}
    {{ return(((instant + 86400000 - 1) // 86400000) * 86400000) }}
{%- endmacro %}

{% macro midnight_at_or_before(instant) -%}
    {{ return((instant // 86400000) * 86400000) }}
{%- endmacro %}

{#- A numeric property's day total (a map of the day's totals by property), null when
    no event of the day had a number there: as an aggregate of the events ignores them. -#}
{% macro day_total_number(totals, key) -%}
    if(mapContains({{ totals }}, {{ key }}), {{ totals }}[{{ key }}], null)
{%- endmacro %}


{#- The bucket of a whole UTC day (`day`, a Date no bound cuts), as event_bucket gives
    it for the day's midnight: a bound at or before that midnight is a bound whose UTC
    date is at or before the day (a bound inside another day is before this midnight
    exactly when its date is earlier). ClickHouse, where the totals are. -#}
{% macro day_bucket(day, bounds) -%}
    (
    {%- for bound in bounds %}
        {% if not loop.first %}+ {% endif %}({{ day }} >= {{ billhouse.utc_date(billhouse.instant_from_epoch_milliseconds(bound)) }})
    {%- endfor %}
    )
{%- endmacro %}


{#- Whether the duplicate index (built earlier in the run) lists an identity stored more
    than once; at parse time, yes. When none is, every stored event is its own first copy:
    a model reads the events as stored, without int_events_deduplicated's ranking of
    copies (which reads every stored event's identity, whatever the time bounds), and no
    day's totals over-count. The calling model declares int_event_identities_duplicated
    upstream (a `-- depends_on:` line). -#}
{% macro any_identity_resent() -%}
    {{ return(billhouse.query_has_rows(
        "select 1 from " ~ ref('int_event_identities_duplicated') ~ " where copies > 1")) }}
{%- endmacro %}


{#- The (subscription, metric code, UTC day `day_column`) of every stored copy of an
    identity stored more than once, among the staging events (`resent`) that match
    `condition`: the days the totals over-count (they count every copy). -#}
{% macro resent_event_days(day_column, condition) -%}
    select distinct
        resent.external_subscription_id as external_subscription_id,
        resent.billable_metric_code as billable_metric_code,
        {{ billhouse.utc_date('resent.event_at') }} as {{ day_column }}
    from {{ ref('stg_billhouse__events') }} as resent
    where resent.identity_hash in (
            select identity_hash from {{ ref('int_event_identities_duplicated') }} where copies > 1
        )
        and {{ condition }}
{%- endmacro %}


{#- The months (epoch milliseconds of their first midnight) whose middle days — every
    UTC day but the first and the last, the rows of the month totals (event_month_totals)
    — all lie in one bucket: between `first_day` and `end_day` (the whole days the close
    reads from the totals) and with no bound strictly inside. Calendar billing's month
    ends fall on a month's first or last UTC day, so a monthly close's months qualify;
    a mid-month start, end, anniversary or week does not. -#}
{% macro whole_month_middles(first_day, end_day, bounds) -%}
    {%- set epoch = modules.datetime.date(1970, 1, 1) -%}
    {%- set first = epoch + modules.datetime.timedelta(days=first_day // 86400000) -%}
    {%- set last = epoch + modules.datetime.timedelta(days=end_day // 86400000) -%}
    {%- set months = [] -%}
    {%- for offset in range((last.year - first.year) * 12 + last.month - first.month + 1) -%}
        {%- set index = first.month - 1 + offset -%}
        {%- set month_start = (modules.datetime.date(first.year + index // 12, index % 12 + 1, 1) - epoch).days * 86400000 -%}
        {%- set next_start = (modules.datetime.date(first.year + (index + 1) // 12, (index + 1) % 12 + 1, 1) - epoch).days * 86400000 -%}
        {%- set middle_start = month_start + 86400000 -%}
        {%- set middle_end = next_start - 86400000 -%}
        {%- set inside = bounds | select('gt', middle_start) | select('lt', middle_end) | list -%}
        {%- if middle_start >= first_day and middle_end <= end_day and not inside -%}
            {%- do months.append(month_start) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(months) }}
{%- endmacro %}


{#- Whether the UTC date `day` is one of its month's middle days (not its first, not its
    last). ClickHouse, where the totals are. -#}
{% macro month_middle_day(day) -%}
    (toDayOfMonth({{ day }}) != 1 and {{ day }} != toLastDayOfMonth({{ day }}))
{%- endmacro %}
