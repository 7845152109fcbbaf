{#- One true-up fee per charge and closed period whose fees (all filters and groups
    together) total less than the charge's min_amount_cents: the difference, rounded
    half-up. Full periods for now; partial periods prorate by days (semantics.md). -#}
{#- built empty without a charge with a minimum (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.catalog_has_charges('min_amount_cents > 0')) %}
with fees as (
    select * from {{ ref('int_charge_fees_rated') }}
),

charges as (
    select * from {{ ref('stg_billhouse__charges') }}
),

charge_totals as (
    select
        subscription_period_key,
        external_subscription_id,
        external_customer_id,
        plan_code,
        currency,
        period_start,
        period_end,
        issuing_date,
        charge_id,
        billable_metric_code,
        charge_model,
        sum(amount_cents) as fees_cents
    from fees
    group by
        subscription_period_key, external_subscription_id, external_customer_id, plan_code, currency,
        period_start, period_end, issuing_date, charge_id, billable_metric_code, charge_model
),

final as (
    select
        concat(charge_totals.subscription_period_key, '/', charge_totals.charge_id, '/true_up') as fee_key,
        charge_totals.subscription_period_key as subscription_period_key,
        charge_totals.external_subscription_id as external_subscription_id,
        charge_totals.external_customer_id as external_customer_id,
        charge_totals.plan_code as plan_code,
        charge_totals.currency as currency,
        charge_totals.period_start as period_start,
        charge_totals.period_end as period_end,
        charge_totals.issuing_date as issuing_date,
        charge_totals.charge_id as charge_id,
        charge_totals.billable_metric_code as billable_metric_code,
        charge_totals.charge_model as charge_model,
        concat(charges.invoice_display_name, ' – minimum') as invoice_display_name,
        charges.min_amount_cents as min_amount_cents,
        charge_totals.fees_cents as fees_cents,
        charges.min_amount_cents - charge_totals.fees_cents as amount_cents
    from charge_totals
    inner join charges
        on charge_totals.charge_id = charges.charge_id
    -- a charge with a minimum (0: none) whose fees came to less
    where charges.min_amount_cents > 0
        and charges.min_amount_cents > charge_totals.fees_cents
)

select * from final
{% endcall %}
