{#-
    rounding_function / rounding_precision on the aggregated units, before pricing:
    round (half-up), ceil or floor to `precision` digits (negative: tens, hundreds...).
    The power of ten is an exact decimal literal, never a float.
-#}
{% macro apply_rounding(units, rounding_function, rounding_precision) -%}
    {%- set factor -%}
        case {{ rounding_precision }}
        {%- for p in range(-12, 13) %}
            when {{ p }} then {{ billhouse.to_decimal("'" ~ ('%.12f' % (10 ** p)).rstrip('0').rstrip('.') ~ "'") }}
        {%- endfor %}
        end
    {%- endset -%}
    case {{ rounding_function }}
        when 'round' then floor({{ units }} * ({{ factor }}) + {{ billhouse.to_decimal("'0.5'") }}) / ({{ factor }})
        when 'ceil' then ceil({{ units }} * ({{ factor }})) / ({{ factor }})
        when 'floor' then floor({{ units }} * ({{ factor }})) / ({{ factor }})
        else {{ units }}
    end
{%- endmacro %}
