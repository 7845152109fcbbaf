{{ config(tags=['finance']) }}
{#-
    One row per invoice with an amount still due as of the as-of date: finalized (or
    voided only after that date), issued on or before it, less the card payments that
    succeeded by its end. Credit notes do not reduce an invoice's amount due (their
    credit goes to the customer's next invoices, their refunds to paid invoices).
-#}
with invoices as (
    select * from {{ ref('stg_ledger__invoices') }}
),

payments as (
    select * from {{ ref('stg_ledger__payment_attempts') }}
    where status = 'succeeded'
),

as_of as (
    select {{ billhouse.finance_as_of_date() }} as as_of_date
),

paid as (
    select
        payments.invoice_id as invoice_id,
        sum(payments.amount_cents) as paid_cents
    from payments
    cross join as_of
    where {{ billhouse.utc_date('payments.finished_at') }} <= as_of.as_of_date
    group by payments.invoice_id
),

due as (
    select
        invoices.invoice_id as invoice_id,
        invoices.invoice_number as invoice_number,
        invoices.external_customer_id as external_customer_id,
        invoices.customer_name as customer_name,
        invoices.currency as currency,
        invoices.issuing_date as issuing_date,
        invoices.due_date as due_date,
        as_of.as_of_date as as_of_date,
        invoices.total_cents as total_cents,
        coalesce(paid.paid_cents, 0) as paid_cents,
        invoices.total_cents - coalesce(paid.paid_cents, 0) as open_amount_cents,
        {{ billhouse.finance_days_between('invoices.due_date', 'as_of.as_of_date') }} as days_past_due
    from invoices
    cross join as_of
    left join paid
        on invoices.invoice_id = paid.invoice_id
    where invoices.issuing_date <= as_of.as_of_date
        and (invoices.status = 'finalized'
             or {{ billhouse.utc_date('invoices.voided_at') }} > as_of.as_of_date)
),

final as (
    select
        invoice_id,
        invoice_number,
        external_customer_id,
        customer_name,
        currency,
        issuing_date,
        due_date,
        as_of_date,
        total_cents,
        paid_cents,
        open_amount_cents,
        days_past_due,
        case
            when days_past_due <= 0 then 'current'
            when days_past_due <= 30 then '1-30'
            when days_past_due <= 60 then '31-60'
            when days_past_due <= 90 then '61-90'
            else '90+'
        end as aging_bucket
    from due
    where open_amount_cents > 0
)

select * from final
