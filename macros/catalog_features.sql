{#-
    What the pricing catalog uses, read at compile time from the raw catalog tables (the
    close loads the catalog before dbt runs): the aggregation types of metrics that some
    charge prices, and whether any charge has filters or grouped_by. The event-grain SQL
    leaves out what the catalog does not use — per-event JSON reads and decimal
    aggregates are most of a close's cost. At parse time (no database) everything is
    assumed used.
-#}
{% macro catalog_features() -%}
    {%- set all_types = ['count_agg', 'sum_agg', 'max_agg', 'unique_count_agg', 'latest_agg', 'weighted_sum_agg', 'custom_agg'] -%}
    {%- if not execute -%}
        {{ return({'aggregation_types': all_types, 'has_filters': true, 'has_grouped_by': true}) }}
    {%- endif -%}
    {%- set metrics = source('billhouse', 'billable_metrics') -%}
    {%- set charges = source('billhouse', 'charges') -%}
    {%- set types = run_query(
        "select distinct aggregation_type from " ~ metrics
        ~ " where code in (select billable_metric_code from " ~ charges ~ ") order by aggregation_type"
    ).columns[0].values() -%}
    {%- set flags = run_query(
        "select sum(case when filter_count > 0 then 1 else 0 end) as filtered,"
        ~ " sum(case when grouped_by <> '[]' then 1 else 0 end) as grouped from " ~ charges
    ).rows[0] -%}
    {{ return({
        'aggregation_types': types | list,
        'has_filters': (flags[0] or 0) > 0,
        'has_grouped_by': (flags[1] or 0) > 0,
    }) }}
{%- endmacro %}
