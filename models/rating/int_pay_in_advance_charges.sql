{#- The usage charges billed per event as events arrive: `pay_in_advance: true` with the
    standard, graduated, package, percentage or graduated_percentage model over a
    non-recurring count_agg or sum_agg metric, filters and grouped_by included. One row
    per charge. Every other charge — volume (its price of every unit depends on the
    period's total), recurring metrics, other aggregations — is billed in arrears for
    its period, pay_in_advance or not (docs/billing-clock.md). -#}
with charges as (
    select * from {{ ref('stg_billhouse__charges') }}
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
        charges.grouped_by as grouped_by,
        charges.filter_count as filter_count,
        metrics.aggregation_type as aggregation_type,
        metrics.field_name as field_name,
        metrics.rounding_function as rounding_function,
        metrics.rounding_precision as rounding_precision
    from charges
    inner join metrics
        on charges.billable_metric_code = metrics.billable_metric_code
    where charges.pay_in_advance
        and charges.charge_model in ('standard', 'graduated', 'package', 'percentage', 'graduated_percentage')
        and metrics.aggregation_type in ('count_agg', 'sum_agg')
        and not metrics.recurring
)

select * from final
