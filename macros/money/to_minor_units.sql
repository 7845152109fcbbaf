{#-
    The one rounding rule (semantics.md): a fee's precise amount in major units becomes
    integer minor units by rounding half-up, e.g. 0.545 EUR -> 55 cents, 1.5 JPY -> 2 yen.
    Amounts are never negative here, so half-up and half-away-from-zero agree; both
    ClickHouse (on Decimal) and PostgreSQL (on numeric) round half away from zero.

    An amount of max_minor_units() or more (10^18 minor units: ten quadrillion euros) is
    no real fee — a client sending nanoseconds or bytes where the metric counts seconds
    or gigabytes. It is clamped to that bound instead of overflowing the 64-bit integer
    (which raised on both warehouses and failed every customer's close), and the invoice
    that holds it is held, not issued (fct_invoice_drafts.held_reason).
-#}
{% macro to_minor_units(precise_amount, minor_units_per_major) -%}
    {{ return(adapter.dispatch('to_minor_units', 'billhouse')(precise_amount, minor_units_per_major)) }}
{%- endmacro %}

{% macro default__to_minor_units(precise_amount, minor_units_per_major) -%}
    cast(round(least(greatest({{ precise_amount }} * {{ minor_units_per_major }},
        -{{ billhouse.max_minor_units() }}), {{ billhouse.max_minor_units() }}), 0) as bigint)
{%- endmacro %}

{% macro clickhouse__to_minor_units(precise_amount, minor_units_per_major) -%}
    {#- the bounds as decimals: greatest() of a Decimal and an integer is a Float64 -#}
    toInt64(round(least(greatest(toDecimal256({{ precise_amount }}, 12) * {{ minor_units_per_major }},
        {{ billhouse.to_decimal('-' ~ billhouse.max_minor_units()) }}),
        {{ billhouse.to_decimal(billhouse.max_minor_units()) }}), 0))
{%- endmacro %}


{#- The bound on an amount in minor units: a fee or an invoice of this much or more is
    held (docs/operations.md, "Held invoices"); nine such fees still add up within a
    64-bit integer. -#}
{% macro max_minor_units() -%}
    1000000000000000000
{%- endmacro %}
