{#- standard: units x amount (the unit price, in major units). -#}
{% macro standard(units, amount) -%}
    {{ return(adapter.dispatch('standard', 'billhouse')(units, amount)) }}
{%- endmacro %}

{% macro default__standard(units, amount) -%}
    {{ billhouse.to_decimal('(' ~ units ~ ') * (' ~ amount ~ ')') }}
{%- endmacro %}
