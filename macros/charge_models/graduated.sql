{#-
    graduated: the units are split across ranges; a range holds the units above its
    lower_bound (the previous range's to_value) up to and including its to_value, and
    each range reached adds its flat_amount once. The first range is always reached, so
    its flat_amount is charged even at zero units. Ranges are rows (int_charge_fee_tiers
    evaluates these per bucket and range, then sums).
-#}
{% macro graduated_tier_units(units, lower_bound, to_value) -%}
    {{ return(adapter.dispatch('graduated_tier_units', 'billhouse')(units, lower_bound, to_value)) }}
{%- endmacro %}

{% macro default__graduated_tier_units(units, lower_bound, to_value) -%}
    {{ billhouse.to_decimal(
        'greatest(case when ' ~ to_value ~ ' is null or ' ~ units ~ ' < ' ~ to_value ~ ' then ' ~ units
        ~ ' else ' ~ to_value ~ ' end - ' ~ lower_bound ~ ', ' ~ billhouse.decimal_zero() ~ ')'
    ) }}
{%- endmacro %}


{% macro graduated(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount) -%}
    {{ return(adapter.dispatch('graduated', 'billhouse')(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount)) }}
{%- endmacro %}

{% macro default__graduated(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount) -%}
    {{ billhouse.to_decimal(
        billhouse.graduated_tier_units(units, lower_bound, to_value) ~ ' * ' ~ per_unit_amount
        ~ ' + case when ' ~ range_index ~ ' = 0 or ' ~ units ~ ' > ' ~ lower_bound ~ ' then ' ~ flat_amount ~ ' else ' ~ billhouse.decimal_zero() ~ ' end'
    ) }}
{%- endmacro %}
