{#- package: amount x packages, packages = ceil(max(0, units - free_units) / package_size). -#}
{% macro package(units, amount, package_size, free_units) -%}
    {{ return(adapter.dispatch('package', 'billhouse')(units, amount, package_size, free_units)) }}
{%- endmacro %}

{% macro default__package(units, amount, package_size, free_units) -%}
    {{ billhouse.to_decimal(
        'ceil(greatest(' ~ units ~ ' - coalesce(' ~ free_units ~ ', 0), ' ~ billhouse.decimal_zero() ~ ') / ' ~ package_size ~ ') * ' ~ amount
    ) }}
{%- endmacro %}
