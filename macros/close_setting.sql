{#- A setting of one close run: as_of, close_from, close_timezone, finance_as_of.

    The close passes them as environment variables (BILLHOUSE_AS_OF, ...; see
    billhouse/dbt_runner.py), not as --vars: dbt re-parses the whole project whenever
    --vars differ, which every close's window does, while a changed environment variable
    re-parses only the files that read it. Without the environment variable the dbt var
    of the same name applies (dbt_project.yml defaults, or `dbt build --vars ...` by hand).
-#}
{% macro close_setting(name, default=none) -%}
    {%- set fallback = var(name, default) if default is not none else var(name) -%}
    {{ return(env_var('BILLHOUSE_' ~ name | upper, fallback)) }}
{%- endmacro %}
