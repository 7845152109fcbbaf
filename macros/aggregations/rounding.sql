{#-
    rounding_function / rounding_precision on the aggregated units, before pricing:
    round (half-up), ceil or floor to `precision` digits (negative: tens, hundreds...).
    The power of ten is an exact decimal literal, never a float.
-#}
{% macro apply_rounding(units, rounding_function, rounding_precision) -%}
    {%- set factor -%}
        case coalesce({{ rounding_precision }}, 0)
        {%- for p in range(-12, 13) %}
            when {{ p }} then {{ billhouse.to_decimal("'" ~ ('%.12f' % (10 ** p)).rstrip('0').rstrip('.') ~ "'") }}
        {%- endfor %}
        end
    {%- endset -%}
    {#- the scaled value is cast back to 12 decimals so that the division stays within Decimal128 -#}
    {%- set scaled = billhouse.to_decimal(units ~ ' * (' ~ factor ~ ')') -%}
    case {{ rounding_function }}
        when 'round' then floor({{ scaled }} + {{ billhouse.to_decimal("'0.5'") }}) / ({{ factor }})
        when 'ceil' then ceil({{ scaled }}) / ({{ factor }})
        when 'floor' then floor({{ scaled }}) / ({{ factor }})
        else {{ units }}
    end
{%- endmacro %}
