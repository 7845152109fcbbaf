{#- Invoice drafts: one per customer, currency and issuing date, totalling its fees.
    Invoicing (Python) finalizes these into the ledger. -#}
with fees as (
    select * from {{ ref('fct_invoice_draft_fees') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

totals as (
    select
        invoice_key,
        external_customer_id,
        currency,
        issuing_date,
        min(period_start) as period_start,
        max(period_end) as period_end,
        count(*) as fee_count,
        sum(amount_cents) as sub_total_cents
    from fees
    group by invoice_key, external_customer_id, currency, issuing_date
),

final as (
    select
        totals.invoice_key as invoice_key,
        totals.external_customer_id as external_customer_id,
        customers.customer_name as customer_name,
        totals.currency as currency,
        currencies.exponent as currency_exponent,
        totals.issuing_date as issuing_date,
        totals.period_start as period_start,
        totals.period_end as period_end,
        totals.fee_count as fee_count,
        totals.sub_total_cents as sub_total_cents,
        totals.sub_total_cents as total_cents
    from totals
    inner join customers
        on totals.external_customer_id = customers.external_customer_id
    inner join currencies
        on totals.currency = currencies.currency
)

select * from final
