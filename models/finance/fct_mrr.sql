{{ config(tags=['finance']) }}
{#-
    Monthly recurring revenue per customer, currency and calendar month, with its
    movements. MRR counts subscription fees only (usage, commitment true-ups and add-ons
    are not recurring): each subscription fee of a finalized invoice contributes its
    plan's full-period price (the fee's unit price, so a prorated period counts at the
    full rate) normalized to a month (yearly / 12, quarterly / 3, weekly x 52 / 12),
    rounded half-up to minor units, to every calendar month its service period touches.
    A plan missing from the catalog gets the interval its fee period's length implies.
    Months run from the customer's first MRR month through the last month that ended by
    the as-of date. beginning + new + expansion + contraction + churn + reactivation
    = ending, for every row.
-#}
{%- set period_days = billhouse.finance_days_between(
    billhouse.utc_date('fees.period_start'), billhouse.utc_date('fees.period_end')) -%}
{#- A plan no longer (or not yet) in the catalog: the interval its period's length implies. -#}
{%- set inferred_interval = "case when " ~ period_days ~ " >= 365 then 'yearly'"
    ~ " when " ~ period_days ~ " >= 181 then 'semiannual'"
    ~ " when " ~ period_days ~ " >= 89 then 'quarterly'"
    ~ " when " ~ period_days ~ " <= 7 then 'weekly' else 'monthly' end" -%}
with invoices as (
    select * from {{ ref('stg_ledger__invoices') }}
    where status = 'finalized'
),

fees as (
    select * from {{ ref('stg_ledger__invoice_fees') }}
    where fee_kind = 'subscription'
),

plans as (
    select * from {{ ref('stg_billhouse__plans') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

subscription_fees as (
    select
        fees.fee_id as fee_id,
        fees.external_subscription_id as external_subscription_id,
        fees.plan_code as plan_code,
        invoices.external_customer_id as external_customer_id,
        invoices.customer_name as customer_name,
        invoices.currency as currency,
        fees.period_start as period_start,
        {{ billhouse.finance_month(billhouse.utc_date('fees.period_start')) }} as first_month,
        {{ billhouse.finance_month(billhouse.finance_last_covered_date('fees.period_end')) }} as last_month,
        {{ billhouse.to_minor_units(
            "case coalesce(plans.plan_interval, " ~ inferred_interval ~ ")"
            ~ " when 'yearly' then fees.unit_amount / 12"
            ~ " when 'semiannual' then fees.unit_amount / 6"
            ~ " when 'quarterly' then fees.unit_amount / 3"
            ~ " when 'weekly' then fees.unit_amount * 52 / 12"
            ~ " else fees.unit_amount end",
            'currencies.minor_units_per_major'
        ) }} as monthly_amount_cents
    from fees
    inner join invoices
        on fees.invoice_id = invoices.invoice_id
    inner join currencies
        on invoices.currency = currencies.currency
    left join plans
        on fees.plan_code = plans.plan_code
    where fees.period_end > fees.period_start
),

month_offsets as (
    {{ billhouse.integer_series(1200) }}
),

subscription_months as (
    select
        subscription_fees.external_subscription_id as external_subscription_id,
        subscription_fees.external_customer_id as external_customer_id,
        subscription_fees.customer_name as customer_name,
        subscription_fees.currency as currency,
        {{ billhouse.finance_add_months('subscription_fees.first_month', 'month_offsets.n') }} as mrr_month,
        subscription_fees.monthly_amount_cents as monthly_amount_cents,
        row_number() over (
            partition by subscription_fees.external_subscription_id,
                {{ billhouse.finance_add_months('subscription_fees.first_month', 'month_offsets.n') }}
            order by subscription_fees.period_start desc, subscription_fees.fee_id
        ) as latest_fee_rank
    from subscription_fees
    cross join month_offsets
    where month_offsets.n <= {{ billhouse.finance_months_between(
        'subscription_fees.first_month', 'subscription_fees.last_month') }}
),

through as (
    select {{ billhouse.finance_add_months(billhouse.finance_month(billhouse.finance_as_of_date()), -1) }}
        as through_month
),

customer_months as (
    select
        external_customer_id,
        currency,
        mrr_month,
        sum(monthly_amount_cents) as mrr_cents
    from subscription_months
    where latest_fee_rank = 1
    group by external_customer_id, currency, mrr_month
),

customers as (
    select
        subscription_months.external_customer_id as external_customer_id,
        subscription_months.currency as currency,
        max(subscription_months.customer_name) as customer_name,
        min(subscription_months.mrr_month) as first_mrr_month
    from subscription_months
    group by subscription_months.external_customer_id, subscription_months.currency
),

spine as (
    select
        customers.external_customer_id as external_customer_id,
        customers.currency as currency,
        customers.customer_name as customer_name,
        customers.first_mrr_month as first_mrr_month,
        {{ billhouse.finance_add_months('customers.first_mrr_month', 'month_offsets.n') }} as mrr_month
    from customers
    cross join month_offsets
    cross join through
    where month_offsets.n <= {{ billhouse.finance_months_between('customers.first_mrr_month', 'through.through_month') }}
),

monthly as (
    select
        spine.external_customer_id as external_customer_id,
        spine.currency as currency,
        spine.customer_name as customer_name,
        spine.first_mrr_month as first_mrr_month,
        spine.mrr_month as mrr_month,
        {{ billhouse.finance_add_months('spine.mrr_month', -1) }} as previous_month,
        coalesce(customer_months.mrr_cents, 0) as mrr_cents
    from spine
    left join customer_months
        on spine.external_customer_id = customer_months.external_customer_id
        and spine.currency = customer_months.currency
        and spine.mrr_month = customer_months.mrr_month
),

with_previous as (
    select
        monthly.external_customer_id as external_customer_id,
        monthly.currency as currency,
        monthly.customer_name as customer_name,
        monthly.first_mrr_month as first_mrr_month,
        monthly.mrr_month as mrr_month,
        coalesce(previous.mrr_cents, 0) as beginning_mrr_cents,
        monthly.mrr_cents as ending_mrr_cents
    from monthly
    left join monthly as previous
        on monthly.external_customer_id = previous.external_customer_id
        and monthly.currency = previous.currency
        and monthly.previous_month = previous.mrr_month
),

final as (
    select
        external_customer_id,
        customer_name,
        currency,
        mrr_month,
        beginning_mrr_cents,
        case when beginning_mrr_cents = 0 and ending_mrr_cents > 0 and mrr_month = first_mrr_month
            then ending_mrr_cents else 0 end as new_mrr_cents,
        case when beginning_mrr_cents > 0 and ending_mrr_cents > beginning_mrr_cents
            then ending_mrr_cents - beginning_mrr_cents else 0 end as expansion_mrr_cents,
        case when beginning_mrr_cents > 0 and ending_mrr_cents > 0 and ending_mrr_cents < beginning_mrr_cents
            then ending_mrr_cents - beginning_mrr_cents else 0 end as contraction_mrr_cents,
        case when beginning_mrr_cents > 0 and ending_mrr_cents = 0
            then 0 - beginning_mrr_cents else 0 end as churned_mrr_cents,
        case when beginning_mrr_cents = 0 and ending_mrr_cents > 0 and mrr_month > first_mrr_month
            then ending_mrr_cents else 0 end as reactivation_mrr_cents,
        ending_mrr_cents
    from with_previous
    where beginning_mrr_cents <> 0 or ending_mrr_cents <> 0
)

select * from final
