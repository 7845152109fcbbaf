{#-
    The one rounding rule (semantics.md): a fee's precise amount in major units becomes
    integer minor units by rounding half-up, e.g. 0.545 EUR -> 55 cents, 1.5 JPY -> 2 yen.
    Amounts are never negative here, so half-up and half-away-from-zero agree; both
    ClickHouse (on Decimal) and PostgreSQL (on numeric) round half away from zero.
-#}
{% macro to_minor_units(precise_amount, minor_units_per_major) -%}
    {{ return(adapter.dispatch('to_minor_units', 'billhouse')(precise_amount, minor_units_per_major)) }}
{%- endmacro %}

{% macro default__to_minor_units(precise_amount, minor_units_per_major) -%}
    cast(round({{ precise_amount }} * {{ minor_units_per_major }}, 0) as bigint)
{%- endmacro %}

{% macro clickhouse__to_minor_units(precise_amount, minor_units_per_major) -%}
    toInt64(round(toDecimal256({{ precise_amount }}, 12) * {{ minor_units_per_major }}, 0))
{%- endmacro %}
