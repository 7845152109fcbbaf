{#-
    Exact decimal for units and money: 12 digits after the point (semantics.md).
    ClickHouse computes in Decimal256: the product of two 12-scale decimals has scale 24,
    and Decimal128 arithmetic overflows silently (no error, a wrong number) once a
    product passes 10^14 — a 10^12-unit bill at 1000 per unit would be garbage.
    PostgreSQL's numeric has the same 76 digits, so that both hold the same units and
    amounts (with 38, a period's units of 10^26 raised there and failed every close;
    an amount past 10^18 minor units holds its invoice on both: to_minor_units).
-#}
{% macro decimal_type() -%}
    {{ return(adapter.dispatch('decimal_type', 'billhouse')()) }}
{%- endmacro %}

{% macro default__decimal_type() -%}
    numeric(76, 12)
{%- endmacro %}

{% macro clickhouse__decimal_type() -%}
    Decimal(76, 12)
{%- endmacro %}


{% macro to_decimal(expression) -%}
    cast({{ expression }} as {{ billhouse.decimal_type() }})
{%- endmacro %}


{#- A typed NULL string (ClickHouse types are non-nullable unless asked). -#}
{% macro null_string() -%}
    {{ return(adapter.dispatch('null_string', 'billhouse')()) }}
{%- endmacro %}

{% macro default__null_string() -%}
    cast(null as {{ dbt.type_string() }})
{%- endmacro %}

{% macro clickhouse__null_string() -%}
    cast(null as Nullable(String))
{%- endmacro %}


{% macro nullable_decimal_type() -%}
    {{ return(adapter.dispatch('nullable_decimal_type', 'billhouse')()) }}
{%- endmacro %}

{% macro default__nullable_decimal_type() -%}
    {{ billhouse.decimal_type() }}
{%- endmacro %}

{% macro clickhouse__nullable_decimal_type() -%}
    Nullable({{ billhouse.decimal_type() }})
{%- endmacro %}


{#- A decimal zero. On ClickHouse, greatest() or CASE over a Decimal and an integer
    literal goes through Float64 (0.505 + 0.5 -> 1.00499...): write zeros with this. -#}
{% macro decimal_zero() -%}
    {{ billhouse.to_decimal('0') }}
{%- endmacro %}
