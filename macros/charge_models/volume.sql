{#-
    volume: the one range containing the total units prices all of them:
    units x per_unit_amount + that range's flat_amount. Zero units bill nothing (as in
    Lago). A range contains units in (lower_bound, to_value]; the first also holds 0.
-#}
{% macro volume_range_contains(units, range_index, lower_bound, to_value) -%}
    {{ return(adapter.dispatch('volume_range_contains', 'billhouse')(units, range_index, lower_bound, to_value)) }}
{%- endmacro %}

{% macro default__volume_range_contains(units, range_index, lower_bound, to_value) -%}
    ((({{ range_index }}) = 0 or ({{ units }}) > ({{ lower_bound }}))
        and (({{ to_value }}) is null or ({{ units }}) <= ({{ to_value }})))
{%- endmacro %}


{% macro volume(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount) -%}
    {{ return(adapter.dispatch('volume', 'billhouse')(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount)) }}
{%- endmacro %}

{% macro default__volume(units, range_index, lower_bound, to_value, per_unit_amount, flat_amount) -%}
    {{ billhouse.to_decimal(
        'case when ' ~ units ~ ' > 0 and ' ~ billhouse.volume_range_contains(units, range_index, lower_bound, to_value)
        ~ ' then ' ~ billhouse.to_decimal(units ~ ' * ' ~ per_unit_amount ~ ' + ' ~ flat_amount)
        ~ ' else ' ~ billhouse.decimal_zero() ~ ' end'
    ) }}
{%- endmacro %}
