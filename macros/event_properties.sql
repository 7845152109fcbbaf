{#-
    A numeric event property as an exact decimal: a JSON number or a numeric string of
    numeric_text_pattern() below 10^26, to 12 decimal places (further digits dropped,
    toward zero); anything else is null. The rule of billhouse/property_numbers.py, which ingestion
    checks a metric's field against: a value accepted there is read here as the number
    it spells, on both warehouses.
-#}
{% macro property_decimal(properties, key) -%}
    {{ return(adapter.dispatch('property_decimal', 'billhouse')(properties, key)) }}
{%- endmacro %}

{#- billhouse.property_numbers.NUMERIC_TEXT_PATTERN (tests/test_property_numbers.py
    checks that the two are the same text). -#}
{% macro numeric_text_pattern() -%}
    ^ *[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]+)? *$
{%- endmacro %}

{% macro default__property_decimal(properties, key) -%}
    case
        when jsonb_typeof(({{ properties }})::jsonb -> ({{ key }})) in ('number', 'string')
            and (({{ properties }})::jsonb ->> ({{ key }})) ~ '{{ billhouse.numeric_text_pattern() }}'
        then case when abs(cast(({{ properties }})::jsonb ->> ({{ key }}) as numeric)) < 1e26
            then cast(trunc(cast(({{ properties }})::jsonb ->> ({{ key }}) as numeric), 12) as {{ billhouse.decimal_type() }})
        end
    end
{%- endmacro %}

{#- One JSON parse per event (parsing is most of what an event costs a close beyond
    reading it, docs/performance.md): the raw value with the quotes of a string (and
    spaces around the number) trimmed, checked against the pattern (toDecimal128OrNull
    alone reads '1.2.3' as 1.23 and '.' as 0), read to 12 places (further digits
    dropped) below 10^26 (Decimal128's range with 12 places: a larger number is null, on
    PostgreSQL too). Exact for what ingestion stores: every non-integer number as
    a decimal string (ingestion/decoding.py), and a numeric string never holds a JSON
    escape (only `"`, `\` and control or non-ASCII characters are escaped). The same
    expression as raw_tables.clickhouse_decimal_of_raw_json (the stored numbers). -#}
{% macro clickhouse__property_decimal(properties, key) -%}
    {%- set trimmed = "trimBoth(JSONExtractRaw(" ~ properties ~ ", " ~ key ~ "), '\" ')" -%}
    if(
        match({{ trimmed }}, '{{ billhouse.numeric_text_pattern() }}'),
        CAST(toDecimal128OrNull({{ trimmed }}, 12) AS Nullable(Decimal(76, 12))),
        NULL
    )
{%- endmacro %}


{#- A numeric property of an event row (`event`: the alias of a row with the staging
    columns), as property_decimal reads it: on ClickHouse from the numbers parsed at
    insert (property_numbers), without parsing the JSON again. -#}
{% macro event_number(event, key) -%}
    {{ return(adapter.dispatch('event_number', 'billhouse')(event, key)) }}
{%- endmacro %}

{% macro default__event_number(event, key) -%}
    {{ billhouse.property_decimal(event ~ '.properties', key) }}
{%- endmacro %}

{% macro clickhouse__event_number(event, key) -%}
    {{ event }}.property_numbers[{{ key }}]
{%- endmacro %}


{#- An event property as text ('' when absent): strings unquoted, numbers as written. -#}
{% macro property_text(properties, key) -%}
    {{ return(adapter.dispatch('property_text', 'billhouse')(properties, key)) }}
{%- endmacro %}

{% macro default__property_text(properties, key) -%}
    coalesce(({{ properties }})::jsonb ->> ({{ key }}), '')
{%- endmacro %}

{% macro clickhouse__property_text(properties, key) -%}
    if(
        JSONType({{ properties }}, {{ key }}) = 'String',
        JSONExtractString({{ properties }}, {{ key }}),
        JSONExtractRaw({{ properties }}, {{ key }})
    )
{%- endmacro %}


{#-
    The group an event belongs to for a charge with `grouped_by` (a JSON array of
    property keys): "key=value, key=value" in the keys' order; '' without grouped_by.
-#}
{% macro group_key(properties, grouped_by) -%}
    {{ return(adapter.dispatch('group_key', 'billhouse')(properties, grouped_by)) }}
{%- endmacro %}

{% macro default__group_key(properties, grouped_by) -%}
    coalesce((
        select string_agg(keys.key || '=' || coalesce(({{ properties }})::jsonb ->> keys.key, ''), ', ' order by keys.position)
        from jsonb_array_elements_text(({{ grouped_by }})::jsonb) with ordinality as keys(key, position)
    ), '')
{%- endmacro %}

{% macro clickhouse__group_key(properties, grouped_by) -%}
    arrayStringConcat(
        arrayMap(
            k -> concat(k, '=', {{ billhouse.clickhouse__property_text(properties, 'k') }}),
            JSONExtract({{ grouped_by }}, 'Array(String)')
        ),
        ', '
    )
{%- endmacro %}
