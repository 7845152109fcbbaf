{#- Local calendar arithmetic in each customer's IANA timezone.

    ClickHouse needs a constant timezone name in its date functions, so on ClickHouse
    these macros expand to one branch per timezone present in the customers table
    (plus UTC), chosen by the row's timezone column: still one set-based expression.
    PostgreSQL takes the timezone from the column directly. -#}

{#- The timezones the customers use, sorted, UTC always included (run at execution).
    Each zone is a branch of every local-time expression, and with customers in hundreds
    of zones planning a model took seconds (docs/performance.md, "Many timezones"), so a
    model whose rows belong to fewer customers says which (config meta
    `customer_timezones`, a list) and gets only their zones:
    - `close_timezone`: in a one-timezone close, the customers of that zone;
    - `with_per_event_charges`: customers on a plan with a per-event charge
      (int_pay_in_advance_charges, which the model must ref). -#}
{% macro customer_timezones() -%}
    {%- set zones = ['UTC'] -%}
    {%- if execute -%}
        {%- set restrictions = (config.get('meta') or {}).get('customer_timezones') or [] -%}
        {%- set conditions = [] -%}
        {%- if 'close_timezone' in restrictions and billhouse.close_setting('close_timezone') -%}
            {%- do conditions.append("timezone = '" ~ (billhouse.close_setting('close_timezone') | replace("'", "''")) ~ "'") -%}
        {%- endif -%}
        {%- if 'with_per_event_charges' in restrictions -%}
            {%- do conditions.append(
                "external_id in (select external_customer_id from " ~ source('billhouse', 'subscriptions')
                ~ " where plan_code in (select plan_code from " ~ ref('int_pay_in_advance_charges') ~ "))") -%}
        {%- endif -%}
        {%- set query = "select distinct timezone from " ~ source('billhouse', 'customers')
            ~ ((" where " ~ (conditions | join(' and '))) if conditions else "") ~ " order by timezone" -%}
        {#- once per model: a model's SQL takes the list a dozen times (a query each, about
            8 ms on the close's path); `model` is the node's context, made for each compile -#}
        {%- set known = model.setdefault('billhouse_customer_timezones', {}) if model is mapping else {} -%}
        {%- if query not in known -%}
            {%- for row in run_query(query).rows -%}
                {%- if row[0] and row[0] not in zones -%}{%- do zones.append(row[0]) -%}{%- endif -%}
            {%- endfor -%}
            {%- do known.update({query: zones | sort}) -%}
        {%- endif -%}
        {{ return(known[query]) }}
    {%- endif -%}
    {{ return(zones | sort) }}
{%- endmacro %}


{#- The customer's local calendar date holding the UTC instant `instant`. -#}
{% macro local_date(instant, tz) -%}
    {{ return(adapter.dispatch('local_date', 'billhouse')(instant, tz)) }}
{%- endmacro %}

{% macro default__local_date(instant, tz) -%}
    cast(({{ instant }}) at time zone ({{ tz }}) as date)
{%- endmacro %}

{% macro clickhouse__local_date(instant, tz) -%}
    multiIf(
    {%- for zone in billhouse.customer_timezones() %}
        {{ tz }} = '{{ zone }}', toDate({{ instant }}, '{{ zone }}'),
    {%- endfor %}
        toDate({{ instant }}, 'UTC'))
{%- endmacro %}


{#- The UTC instant of local midnight starting the date `local_day` in timezone `tz`
    (a DST day is 23 or 25 hours long; the boundaries stay at local midnight). -#}
{% macro local_midnight(local_day, tz) -%}
    {{ return(adapter.dispatch('local_midnight', 'billhouse')(local_day, tz)) }}
{%- endmacro %}

{% macro default__local_midnight(local_day, tz) -%}
    (cast({{ local_day }} as timestamp) at time zone ({{ tz }}))
{%- endmacro %}

{% macro clickhouse__local_midnight(local_day, tz) -%}
    multiIf(
    {%- for zone in billhouse.customer_timezones() %}
        {{ tz }} = '{{ zone }}', toTimeZone(toDateTime64({{ local_day }}, 3, '{{ zone }}'), 'UTC'),
    {%- endfor %}
        toDateTime64({{ local_day }}, 3, 'UTC'))
{%- endmacro %}


{#- A date plus a number of days / months (months clamp to the month's last day:
    Jan 31 + 1 month = Feb 28, or Feb 29 in a leap year). -#}
{% macro date_add_days(local_day, days) -%}
    {{ return(adapter.dispatch('date_add_days', 'billhouse')(local_day, days)) }}
{%- endmacro %}

{% macro default__date_add_days(local_day, days) -%}
    cast({{ local_day }} + ({{ days }}) * interval '1 day' as date)
{%- endmacro %}

{% macro clickhouse__date_add_days(local_day, days) -%}
    addDays({{ local_day }}, {{ days }})
{%- endmacro %}

{% macro date_add_months(local_day, months) -%}
    {{ return(adapter.dispatch('date_add_months', 'billhouse')(local_day, months)) }}
{%- endmacro %}

{% macro default__date_add_months(local_day, months) -%}
    cast({{ local_day }} + ({{ months }}) * interval '1 month' as date)
{%- endmacro %}

{% macro clickhouse__date_add_months(local_day, months) -%}
    addMonths({{ local_day }}, {{ months }})
{%- endmacro %}


{#- Whole days from `start_day` to `end_day` (dates). -#}
{% macro days_between(start_day, end_day) -%}
    {{ return(adapter.dispatch('days_between', 'billhouse')(start_day, end_day)) }}
{%- endmacro %}

{% macro default__days_between(start_day, end_day) -%}
    ({{ end_day }} - {{ start_day }})
{%- endmacro %}

{% macro clickhouse__days_between(start_day, end_day) -%}
    toInt64(dateDiff('day', {{ start_day }}, {{ end_day }}))
{%- endmacro %}


{#- Whole calendar months from `start_day`'s month to `end_day`'s month. -#}
{% macro months_between(start_day, end_day) -%}
    {{ return(adapter.dispatch('months_between', 'billhouse')(start_day, end_day)) }}
{%- endmacro %}

{% macro default__months_between(start_day, end_day) -%}
    ((extract(year from {{ end_day }}) - extract(year from {{ start_day }})) * 12
        + extract(month from {{ end_day }}) - extract(month from {{ start_day }}))::bigint
{%- endmacro %}

{% macro clickhouse__months_between(start_day, end_day) -%}
    toInt64(dateDiff('month', toStartOfMonth({{ start_day }}), toStartOfMonth({{ end_day }})))
{%- endmacro %}


{#- The first day of the calendar period of `interval` holding `local_day`: weeks start
    Monday; quarters Jan/Apr/Jul/Oct; half-years Jan/Jul. -#}
{% macro calendar_period_start(local_day, interval) -%}
    {{ return(adapter.dispatch('calendar_period_start', 'billhouse')(local_day, interval)) }}
{%- endmacro %}

{% macro default__calendar_period_start(local_day, interval) -%}
    case {{ interval }}
        when 'weekly' then cast(date_trunc('week', {{ local_day }}) as date)
        when 'monthly' then cast(date_trunc('month', {{ local_day }}) as date)
        when 'quarterly' then cast(date_trunc('quarter', {{ local_day }}) as date)
        when 'semiannual' then cast(date_trunc('year', {{ local_day }})
            + case when extract(month from {{ local_day }}) >= 7 then interval '6 months' else interval '0 months' end as date)
        else cast(date_trunc('year', {{ local_day }}) as date)
    end
{%- endmacro %}

{% macro clickhouse__calendar_period_start(local_day, interval) -%}
    multiIf(
        {{ interval }} = 'weekly', toMonday({{ local_day }}),
        {{ interval }} = 'monthly', toStartOfMonth({{ local_day }}),
        {{ interval }} = 'quarterly', toStartOfQuarter({{ local_day }}),
        {{ interval }} = 'semiannual', addMonths(toStartOfYear({{ local_day }}), if(toMonth({{ local_day }}) >= 7, 6, 0)),
        toStartOfYear({{ local_day }}))
{%- endmacro %}


{#- Expand each row into one row per integer n in [low, high] (a column `n`). -#}
{% macro integer_range_column(low, high) -%}
    {{ return(adapter.dispatch('integer_range_column', 'billhouse')(low, high)) }}
{%- endmacro %}

{% macro default__integer_range_column(low, high) -%}
    generate_series(cast({{ low }} as bigint), cast({{ high }} as bigint))
{%- endmacro %}

{% macro clickhouse__integer_range_column(low, high) -%}
    toInt64(arrayJoin(range(toInt64({{ low }}), toInt64({{ high }}) + 1)))
{%- endmacro %}
