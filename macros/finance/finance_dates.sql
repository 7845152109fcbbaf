{#- Date arithmetic of the finance marts, on calendar dates (UTC). -#}

{#- The first day of the month holding the date `day`, as a date. -#}
{% macro finance_month(day) -%}
    {{ return(adapter.dispatch('finance_month', 'billhouse')(day)) }}
{%- endmacro %}

{% macro default__finance_month(day) -%}
    cast(date_trunc('month', {{ day }}) as date)
{%- endmacro %}

{% macro clickhouse__finance_month(day) -%}
    toStartOfMonth({{ day }})
{%- endmacro %}


{#- The date `day` moved by `months` calendar months. -#}
{% macro finance_add_months(day, months) -%}
    {{ return(adapter.dispatch('finance_add_months', 'billhouse')(day, months)) }}
{%- endmacro %}

{% macro default__finance_add_months(day, months) -%}
    cast({{ day }} + ({{ months }}) * interval '1 month' as date)
{%- endmacro %}

{% macro clickhouse__finance_add_months(day, months) -%}
    addMonths({{ day }}, {{ months }})
{%- endmacro %}


{#- Whole days from date `start_day` to date `end_day` (negative when end is earlier). -#}
{% macro finance_days_between(start_day, end_day) -%}
    {{ return(adapter.dispatch('finance_days_between', 'billhouse')(start_day, end_day)) }}
{%- endmacro %}

{% macro default__finance_days_between(start_day, end_day) -%}
    ({{ end_day }} - {{ start_day }})
{%- endmacro %}

{% macro clickhouse__finance_days_between(start_day, end_day) -%}
    dateDiff('day', {{ start_day }}, {{ end_day }})
{%- endmacro %}


{#- Whole months between two month-start dates. -#}
{% macro finance_months_between(start_month, end_month) -%}
    {{ return(adapter.dispatch('finance_months_between', 'billhouse')(start_month, end_month)) }}
{%- endmacro %}

{% macro default__finance_months_between(start_month, end_month) -%}
    cast((extract(year from {{ end_month }}) * 12 + extract(month from {{ end_month }}))
         - (extract(year from {{ start_month }}) * 12 + extract(month from {{ start_month }})) as integer)
{%- endmacro %}

{% macro clickhouse__finance_months_between(start_month, end_month) -%}
    toInt32(dateDiff('month', {{ start_month }}, {{ end_month }}))
{%- endmacro %}


{#- The UTC date of the last instant before the exclusive end instant `period_end`. -#}
{% macro finance_last_covered_date(period_end) -%}
    {{ return(adapter.dispatch('finance_last_covered_date', 'billhouse')(period_end)) }}
{%- endmacro %}

{% macro default__finance_last_covered_date(period_end) -%}
    cast(({{ period_end }} - interval '1 microsecond') at time zone 'UTC' as date)
{%- endmacro %}

{% macro clickhouse__finance_last_covered_date(period_end) -%}
    toDate(subtractMicroseconds({{ period_end }}, 1), 'UTC')
{%- endmacro %}


{#- The as-of date of the receivables (setting finance_as_of, else the date of as_of). -#}
{% macro finance_as_of_date() -%}
    cast('{{ billhouse.close_setting("finance_as_of", billhouse.close_setting("as_of")[:10]) }}' as date)
{%- endmacro %}
