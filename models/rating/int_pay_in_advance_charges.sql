{#- The usage charges billed per event as events arrive (`pay_in_advance: true`, with
    the standard model over count_agg or sum_agg, without filters or grouping); one row
    per charge, priced at its default price. Every other charge, pay_in_advance or not,
    is billed in arrears for its period. -#}
with charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

prices as (
    select * from {{ ref('stg_billhouse__charge_prices') }}
),

metrics as (
    select * from {{ ref('stg_billhouse__billable_metrics') }}
),

final as (
    select
        charges.charge_id as charge_id,
        charges.plan_code as plan_code,
        charges.billable_metric_code as billable_metric_code,
        charges.charge_model as charge_model,
        charges.invoice_display_name as invoice_display_name,
        prices.amount as amount,
        metrics.aggregation_type as aggregation_type,
        metrics.field_name as field_name
    from charges
    inner join metrics
        on charges.billable_metric_code = metrics.billable_metric_code
    inner join prices
        on charges.charge_id = prices.charge_id
        and prices.filter_index = -1
    where charges.pay_in_advance
        and charges.filter_count = 0
        and charges.grouped_by in ('', '[]')
        and charges.charge_model = 'standard'
        and metrics.aggregation_type in ('count_agg', 'sum_agg')
)

select * from final
