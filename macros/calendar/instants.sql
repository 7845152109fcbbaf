{#- A UTC instant from an ISO 8601 literal such as 2026-12-01T00:00:00Z. -#}
{% macro utc_instant(iso_literal) -%}
    {{ return(adapter.dispatch('utc_instant', 'billhouse')(iso_literal)) }}
{%- endmacro %}

{% macro default__utc_instant(iso_literal) -%}
    cast('{{ iso_literal }}' as timestamptz)
{%- endmacro %}

{% macro clickhouse__utc_instant(iso_literal) -%}
    parseDateTime64BestEffort('{{ iso_literal }}', 3, 'UTC')
{%- endmacro %}


{#- The first instant of the UTC calendar month holding `instant`. -#}
{% macro month_start(instant) -%}
    {{ return(adapter.dispatch('month_start', 'billhouse')(instant)) }}
{%- endmacro %}

{% macro default__month_start(instant) -%}
    date_trunc('month', {{ instant }}, 'UTC')
{%- endmacro %}

{% macro clickhouse__month_start(instant) -%}
    toDateTime64(toStartOfMonth({{ instant }}, 'UTC'), 3, 'UTC')
{%- endmacro %}


{#- `instant` moved by `months` calendar months (clamped to the month's last day). -#}
{% macro add_months(instant, months) -%}
    {{ return(adapter.dispatch('add_months', 'billhouse')(instant, months)) }}
{%- endmacro %}

{% macro default__add_months(instant, months) -%}
    ({{ instant }} + ({{ months }}) * interval '1 month')
{%- endmacro %}

{% macro clickhouse__add_months(instant, months) -%}
    addMonths({{ instant }}, {{ months }})
{%- endmacro %}


{#- The calendar date of a UTC instant. -#}
{% macro utc_date(instant) -%}
    {{ return(adapter.dispatch('utc_date', 'billhouse')(instant)) }}
{%- endmacro %}

{% macro default__utc_date(instant) -%}
    cast(({{ instant }}) at time zone 'UTC' as date)
{%- endmacro %}

{% macro clickhouse__utc_date(instant) -%}
    toDate({{ instant }}, 'UTC')
{%- endmacro %}
