{#- One row per bucket of a tiered charge (graduated, volume, graduated_percentage) and
    range of its price: the units that fall in the range and what they cost. The
    breakdown shown under a graduated fee; int_charge_fees_rated sums it. -#}
with usage as (
    select * from {{ ref('int_usage_aggregated') }}
    where charge_model in ('graduated', 'volume', 'graduated_percentage')
),

ranges as (
    select * from {{ ref('stg_billhouse__charge_ranges') }}
),

final as (
    select
        concat(usage.bucket_key, '/', cast(ranges.range_index as {{ dbt.type_string() }})) as fee_tier_key,
        usage.bucket_key as bucket_key,
        usage.charge_model as charge_model,
        ranges.range_index as range_index,
        ranges.from_value as from_value,
        ranges.to_value as to_value,
        ranges.per_unit_amount as per_unit_amount,
        ranges.rate as rate,
        ranges.flat_amount as flat_amount,
        {#- the outer cast keeps the column's declared precision (PostgreSQL drops it on CASE) -#}
        cast(case usage.charge_model
            when 'volume' then
                case when {{ billhouse.volume_range_contains('usage.units', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value') }}
                    then usage.units else {{ billhouse.to_decimal('0') }} end
            else {{ billhouse.graduated_tier_units('usage.units', 'ranges.lower_bound', 'ranges.to_value') }}
        end as {{ billhouse.decimal_type() }}) as tier_units,
        cast(case usage.charge_model
            when 'graduated' then {{ billhouse.graduated(
                'usage.units', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                'coalesce(ranges.per_unit_amount, 0)', 'ranges.flat_amount') }}
            when 'graduated_percentage' then {{ billhouse.graduated_percentage(
                'usage.units', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                'coalesce(ranges.rate, 0)', 'ranges.flat_amount') }}
            when 'volume' then {{ billhouse.volume(
                'usage.units', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                'coalesce(ranges.per_unit_amount, 0)', 'ranges.flat_amount') }}
        end as {{ billhouse.decimal_type() }}) as tier_amount
    from usage
    inner join ranges
        on usage.charge_price_id = ranges.charge_price_id
)

select * from final
