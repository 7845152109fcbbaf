{#- graduated_percentage: graduated, with each range's `rate` (in %) of the units in it
    instead of a per-unit price; each range reached adds its flat_amount once. -#}
{% macro graduated_percentage(units, range_index, lower_bound, to_value, rate, flat_amount) -%}
    {{ return(adapter.dispatch('graduated_percentage', 'billhouse')(units, range_index, lower_bound, to_value, rate, flat_amount)) }}
{%- endmacro %}

{% macro default__graduated_percentage(units, range_index, lower_bound, to_value, rate, flat_amount) -%}
    {{ billhouse.graduated(units, range_index, lower_bound, to_value, '(' ~ rate ~ ' / 100)', flat_amount) }}
{%- endmacro %}
