{#- custom_agg: the sum over the period's events of the metric's validated SQL
    expression (compiled per warehouse at catalog load; see billhouse/custom_expression.py). -#}
{% macro custom_agg(value, in_period, recurring) -%}
    {{ return(adapter.dispatch('custom_agg', 'billhouse')(value, in_period, recurring)) }}
{%- endmacro %}

{% macro default__custom_agg(value, in_period, recurring) -%}
    {{ billhouse.sum_agg(value, in_period, recurring) }}
{%- endmacro %}


{#- The compiled custom_agg expressions, as one CASE over the metric code (compile time). -#}
{% macro custom_expression_case(metric_code_column) -%}
    {%- set column = billhouse.custom_expression_column() -%}
    {%- if execute -%}
        {%- set rows = run_query(
            "select code, " ~ column ~ " from " ~ source('billhouse', 'billable_metrics')
            ~ " where aggregation_type = 'custom_agg' order by code"
        ).rows -%}
    {%- else -%}
        {%- set rows = [] -%}
    {%- endif -%}
    {%- if rows | length == 0 -%}
        cast(null as {{ billhouse.nullable_decimal_type() }})
    {%- else -%}
        case {{ metric_code_column }}
        {%- for row in rows %}
            {#- rounded half away from zero to the 12 places units keep, on both warehouses
                (PostgreSQL's cast rounds a product's 13th place, ClickHouse's truncates) #}
            when '{{ row[0] | replace("'", "''") }}' then cast(round(({{ row[1] }}), 12) as {{ billhouse.nullable_decimal_type() }})
        {%- endfor %}
        end
    {%- endif -%}
{%- endmacro %}


{#- The column of billhouse_raw.billable_metrics holding a custom expression compiled for
    this warehouse's dialect (billhouse/custom_expression.py). -#}
{% macro custom_expression_column() -%}
    {{ return(adapter.dispatch('custom_expression_column', 'billhouse')()) }}
{%- endmacro %}

{% macro default__custom_expression_column() -%}
    {{ return('expression_postgres') }}
{%- endmacro %}

{% macro clickhouse__custom_expression_column() -%}
    {{ return('expression_clickhouse') }}
{%- endmacro %}
