{#-
    A numeric event property as an exact decimal: JSON numbers and numeric strings are
    read from their text (never through float); anything else is null.
-#}
{% macro property_decimal(properties, key) -%}
    {{ return(adapter.dispatch('property_decimal', 'billhouse')(properties, key)) }}
{%- endmacro %}

{% macro default__property_decimal(properties, key) -%}
    case
        when jsonb_typeof(({{ properties }})::jsonb -> ({{ key }})) in ('number', 'string')
            and (({{ properties }})::jsonb ->> ({{ key }})) ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$'
        then cast(({{ properties }})::jsonb ->> ({{ key }}) as {{ billhouse.decimal_type() }})
    end
{%- endmacro %}

{% macro clickhouse__property_decimal(properties, key) -%}
    toDecimal128OrNull(
        if(
            JSONType({{ properties }}, {{ key }}) = 'String',
            JSONExtractString({{ properties }}, {{ key }}),
            JSONExtractRaw({{ properties }}, {{ key }})
        ),
        12
    )
{%- endmacro %}
