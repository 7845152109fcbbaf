{#-
    Event buckets (models/metering/int_charge_events_aggregated.sql): the bounds of the
    periods a close rates by bucket, read at compile time as epoch milliseconds, sorted;
    bucket k holds the instants in [bound k, bound k + 1), bucket 0 those before the
    first bound. A period from bound i to bound j covers buckets i to j - 1.
-#}
{% macro event_bucket_bounds(period_charges) -%}
    {%- if not execute -%}
        {{ return([]) }}
    {%- endif -%}
    {%- set bounds = run_query(
        "select distinct bound from ("
        ~ " select " ~ billhouse.epoch_milliseconds('period_start') ~ " as bound from " ~ period_charges ~ " where rated_by_bucket"
        ~ " union all"
        ~ " select " ~ billhouse.epoch_milliseconds('period_end') ~ " as bound from " ~ period_charges ~ " where rated_by_bucket"
        ~ ") as bounds order by bound"
    ).rows -%}
    {{ return(bounds | map(attribute=0) | map('int') | list) }}
{%- endmacro %}


{#- The bucket holding `instant`: how many bounds are at or before it. -#}
{% macro event_bucket(instant, bounds) -%}
    {{ return(adapter.dispatch('event_bucket', 'billhouse')(instant, bounds)) }}
{%- endmacro %}

{% macro default__event_bucket(instant, bounds) -%}
    (
    {%- for bound in bounds %}
        {% if not loop.first %}+ {% endif %}(case when {{ instant }} >= {{ billhouse.instant_from_epoch_milliseconds(bound) }} then 1 else 0 end)
    {%- endfor %}
    )
{%- endmacro %}

{#- a comparison is a UInt8 in ClickHouse: a sum of them without CASE -#}
{% macro clickhouse__event_bucket(instant, bounds) -%}
    (
    {%- for bound in bounds %}
        {% if not loop.first %}+ {% endif %}({{ instant }} >= {{ billhouse.instant_from_epoch_milliseconds(bound) }})
    {%- endfor %}
    )
{%- endmacro %}


{% macro epoch_milliseconds(instant) -%}
    {{ return(adapter.dispatch('epoch_milliseconds', 'billhouse')(instant)) }}
{%- endmacro %}

{% macro default__epoch_milliseconds(instant) -%}
    cast(round(extract(epoch from {{ instant }}) * 1000) as bigint)
{%- endmacro %}

{% macro clickhouse__epoch_milliseconds(instant) -%}
    toUnixTimestamp64Milli({{ instant }})
{%- endmacro %}


{% macro instant_from_epoch_milliseconds(milliseconds) -%}
    {{ return(adapter.dispatch('instant_from_epoch_milliseconds', 'billhouse')(milliseconds)) }}
{%- endmacro %}

{% macro default__instant_from_epoch_milliseconds(milliseconds) -%}
    (timestamptz 'epoch' + {{ milliseconds }} * interval '1 millisecond')
{%- endmacro %}

{% macro clickhouse__instant_from_epoch_milliseconds(milliseconds) -%}
    fromUnixTimestamp64Milli(toInt64({{ milliseconds }}), 'UTC')
{%- endmacro %}


{#- `function` (sum, max) of `value` over the rows where `condition` holds; null when none. -#}
{% macro bucket_aggregate(function, value, condition) -%}
    {{ return(adapter.dispatch('bucket_aggregate', 'billhouse')(function, value, condition)) }}
{%- endmacro %}

{% macro default__bucket_aggregate(function, value, condition) -%}
    {{ function }}(case when {{ condition }} then {{ value }} end)
{%- endmacro %}

{#- the -If combinator: no CASE column built per event -#}
{% macro clickhouse__bucket_aggregate(function, value, condition) -%}
    {{ function }}If({{ value }}, {{ condition }})
{%- endmacro %}
