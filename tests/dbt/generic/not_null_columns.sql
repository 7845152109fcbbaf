{#- Fails with the rows where any of `columns` is null, naming those columns: one query
    for the columns of a model that are never null, where dbt's not_null takes one query
    (and one node of the build) per column. -#}
{% test not_null_columns(model, columns) %}

select null_columns
from (
    select
        {% for column in columns -%}
        case when {{ column }} is null then '{{ column }} ' else '' end{{ ' ||' if not loop.last }}
        {% endfor -%}
        as null_columns
    from {{ model }}
) as checked
where null_columns <> ''

{% endtest %}
