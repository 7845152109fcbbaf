{#-
    A model whose rows can only come from something this close does not have — a kind
    of charge the catalog lacks, a late period — is built empty without planning its
    query. On ClickHouse planning such a query costs 0.1-0.3 s with nothing to read,
    and every close paid it for each of them (docs/performance.md, stop 20).

        {% call billhouse.built_only_if(<whether the model can have rows>) %}
            with ... select * from final
        {% endcall %}

    When the condition is false the model is an empty select of the columns its YAML
    declares (`name` and `data_type`, in order), which tests/test_built_only_if.py holds
    equal to what the model's query yields. The model's query is used, whatever the
    condition, at parse time (so its refs are recorded), in unit tests (their inputs are
    fixtures), on PostgreSQL (which plans such a query in milliseconds), and when the
    close setting `build_every_model` is 'true' (to compare both ways).
-#}
{% macro built_only_if(needed) -%}
    {%- if needed or not billhouse.skips_models_not_needed() -%}
        {{ caller() }}
    {%- else -%}
        {{ billhouse.empty_select_of_declared_columns() }}
    {%- endif -%}
{%- endmacro %}


{% macro skips_models_not_needed() -%}
    {{ return(adapter.dispatch('skips_models_not_needed', 'billhouse')()) }}
{%- endmacro %}

{% macro default__skips_models_not_needed() -%}
    {{ return(false) }}
{%- endmacro %}

{% macro clickhouse__skips_models_not_needed() -%}
    {{ return(
        execute
        and model.resource_type == 'model'
        and billhouse.close_setting('build_every_model') | string | lower != 'true'
    ) }}
{%- endmacro %}


{#- No row, typed as the model's YAML declares (ClickHouse's `null` table function). -#}
{% macro empty_select_of_declared_columns() -%}
    {%- set columns = model.columns.values() | list -%}
    {%- if not columns -%}
        {{ exceptions.raise_compiler_error(model.name ~ ": built_only_if needs the model's columns declared in its YAML") }}
    {%- endif -%}
    {%- set structure = [] -%}
    {%- for column in columns -%}
        {%- if not column.data_type -%}
            {{ exceptions.raise_compiler_error(
                model.name ~ ": column " ~ column.name ~ " has no data_type in the YAML (built_only_if builds the"
                ~ " model empty with the declared types)") }}
        {%- endif -%}
        {%- do structure.append('`' ~ column.name ~ '` ' ~ column.data_type) -%}
    {%- endfor -%}
    -- built empty: nothing this close has can give the model a row (macro built_only_if)
    select * from null('{{ structure | join(", ") | replace("'", "''") }}')
{%- endmacro %}


{#- Whether a query returns a row, read when the caller compiles (at parse time, and in a
    unit test, whose inputs are fixtures: yes). -#}
{% macro query_has_rows(sql) -%}
    {%- if not execute or model.resource_type != 'model' -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set found = run_query("select count(*) from (" ~ sql ~ " limit 1) as probe") -%}
    {{ return(found.columns[0].values()[0] | int > 0) }}
{%- endmacro %}


{#- Whether the catalog has a charge meeting `condition` (SQL on the raw charges table). -#}
{% macro catalog_has_charges(condition) -%}
    {%- if model.resource_type != 'model' -%}
        {{ return(true) }}  {#- a unit test has no catalog table #}
    {%- endif -%}
    {{ return(billhouse.query_has_rows("select 1 from " ~ source('billhouse', 'charges') ~ " where " ~ condition)) }}
{%- endmacro %}


{#- Whether a model built earlier in the close holds any row (at parse time: yes). -#}
{% macro relation_has_rows(relation) -%}
    {{ return(billhouse.query_has_rows("select 1 from " ~ relation)) }}
{%- endmacro %}
