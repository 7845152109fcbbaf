{#- A setting of one close run: as_of, close_from, close_timezone, finance_as_of,
    build_every_model, read_event_day_totals.

    The close passes them as environment variables (BILLHOUSE_AS_OF, ...; see
    billhouse/dbt_runner.py), not as --vars: dbt re-parses the whole project whenever
    --vars differ, which every close's window does. Without the environment variable the
    dbt var of the same name applies (dbt_project.yml defaults, or `dbt build --vars ...`
    by hand).

    The environment is read when a model compiles, never while dbt parses: dbt re-parses
    every file that read an environment variable during parsing once its value changes,
    and what a parse keeps of a model (refs, sources, config) never depends on the close
    window. So a close with a new window re-uses the parsed project as it is.
-#}
{% macro close_setting(name, default=none) -%}
    {%- set fallback = var(name, default) if default is not none else var(name) -%}
    {%- if not execute -%}
        {{ return(fallback) }}
    {%- endif -%}
    {{ return(env_var('BILLHOUSE_' ~ name | upper, fallback)) }}
{%- endmacro %}
