{{ config(tags=['finance']) }}
{#- Open amount due per customer and currency as of the as-of date, by days past due. -#}
with open_invoices as (
    {#- renamed: ClickHouse would resolve a column named like an output alias to the alias -#}
    select
        as_of_date,
        external_customer_id,
        customer_name as invoice_customer_name,
        currency,
        due_date,
        aging_bucket,
        open_amount_cents as invoice_open_cents
    from {{ ref('int_receivables_open_invoices') }}
),

final as (
    select
        as_of_date,
        external_customer_id,
        max(invoice_customer_name) as customer_name,
        currency,
        count(*) as open_invoices_count,
        sum(invoice_open_cents) as open_amount_cents,
        sum(case when aging_bucket = 'current' then invoice_open_cents else 0 end) as current_cents,
        sum(case when aging_bucket = '1-30' then invoice_open_cents else 0 end) as past_due_1_30_cents,
        sum(case when aging_bucket = '31-60' then invoice_open_cents else 0 end) as past_due_31_60_cents,
        sum(case when aging_bucket = '61-90' then invoice_open_cents else 0 end) as past_due_61_90_cents,
        sum(case when aging_bucket = '90+' then invoice_open_cents else 0 end) as past_due_over_90_cents,
        sum(case when aging_bucket <> 'current' then invoice_open_cents else 0 end) as overdue_cents,
        min(due_date) as oldest_due_date
    from open_invoices
    group by as_of_date, external_customer_id, currency
)

select * from final
