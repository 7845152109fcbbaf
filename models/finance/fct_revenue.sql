{{ config(tags=['finance']) }}
{#-
    Billed revenue, excluding taxes: each fee line of a finalized invoice on its issuing
    date, less its share of the invoice's coupons; and each credit note, allocated to
    the fees of its invoice pro rata to their net amounts, on the credit note's date.
    Integer shares by largest remainder, so lines add up to the invoice's coupons and
    to each credit note's pre-tax amount exactly. Voided invoices are not revenue.
-#}
with invoices as (
    select * from {{ ref('stg_ledger__invoices') }}
    where status = 'finalized'
),

fees as (
    select * from {{ ref('stg_ledger__invoice_fees') }}
),

credit_notes as (
    select * from {{ ref('stg_ledger__credit_notes') }}
    where status = 'finalized'
),

fee_coupon_floors as (
    select
        fees.fee_id as fee_id,
        fees.invoice_id as invoice_id,
        fees.fee_position as fee_position,
        fees.amount_cents as amount_cents,
        invoices.coupons_cents as invoice_coupons_cents,
        {{ billhouse.finance_floor_bigint('fees.precise_coupons_amount_cents') }} as coupon_floor_cents,
        fees.precise_coupons_amount_cents - floor(fees.precise_coupons_amount_cents) as coupon_fraction
    from fees
    inner join invoices
        on fees.invoice_id = invoices.invoice_id
),

fee_coupon_ranks as (
    select
        fee_id,
        invoice_id,
        fee_position,
        amount_cents,
        coupon_floor_cents,
        invoice_coupons_cents - sum(coupon_floor_cents) over (partition by invoice_id) as coupon_remainder,
        row_number() over (partition by invoice_id order by coupon_fraction desc, fee_position) as coupon_rank
    from fee_coupon_floors
),

fee_nets as (
    select
        fee_id,
        invoice_id,
        fee_position,
        amount_cents,
        coupon_floor_cents + (case when coupon_rank <= coupon_remainder then 1 else 0 end) as coupons_amount_cents
    from fee_coupon_ranks
),

credit_note_shares as (
    select
        credit_notes.credit_note_id as credit_note_id,
        fee_nets.fee_id as fee_id,
        fee_nets.fee_position as fee_position,
        credit_notes.total_amount_cents - credit_notes.taxes_amount_cents as credit_note_net_cents,
        {{ billhouse.to_decimal('credit_notes.total_amount_cents - credit_notes.taxes_amount_cents') }}
            * (fee_nets.amount_cents - fee_nets.coupons_amount_cents)
            / greatest(sum(fee_nets.amount_cents - fee_nets.coupons_amount_cents)
                over (partition by credit_notes.credit_note_id), 1) as exact_share
    from credit_notes
    inner join fee_nets
        on credit_notes.invoice_id = fee_nets.invoice_id
),

credit_note_ranks as (
    select
        credit_note_id,
        fee_id,
        {{ billhouse.finance_floor_bigint('exact_share') }} as share_floor_cents,
        credit_note_net_cents
            - sum({{ billhouse.finance_floor_bigint('exact_share') }}) over (partition by credit_note_id)
            as share_remainder,
        row_number() over (
            partition by credit_note_id order by exact_share - floor(exact_share) desc, fee_position
        ) as share_rank
    from credit_note_shares
),

credit_note_allocations as (
    select
        credit_note_id,
        fee_id,
        share_floor_cents + (case when share_rank <= share_remainder then 1 else 0 end) as credit_notes_amount_cents
    from credit_note_ranks
),

fee_lines as (
    select
        fee_nets.fee_id as revenue_line_id,
        'fee' as line_type,
        invoices.issuing_date as revenue_date,
        invoices.invoice_id as invoice_id,
        invoices.invoice_number as invoice_number,
        {{ billhouse.null_string() }} as credit_note_number,
        fee_nets.fee_id as fee_id,
        fee_nets.amount_cents as gross_amount_cents,
        fee_nets.coupons_amount_cents as coupons_amount_cents,
        cast(0 as {{ dbt.type_bigint() }}) as credit_notes_amount_cents
    from fee_nets
    inner join invoices
        on fee_nets.invoice_id = invoices.invoice_id
),

credit_note_lines as (
    select
        concat(credit_notes.credit_note_id, '/', credit_note_allocations.fee_id) as revenue_line_id,
        'credit_note' as line_type,
        {{ billhouse.utc_date('credit_notes.created_at') }} as revenue_date,
        credit_notes.invoice_id as invoice_id,
        invoices.invoice_number as invoice_number,
        credit_notes.credit_note_number as credit_note_number,
        credit_note_allocations.fee_id as fee_id,
        cast(0 as {{ dbt.type_bigint() }}) as gross_amount_cents,
        cast(0 as {{ dbt.type_bigint() }}) as coupons_amount_cents,
        credit_note_allocations.credit_notes_amount_cents as credit_notes_amount_cents
    from credit_note_allocations
    inner join credit_notes
        on credit_note_allocations.credit_note_id = credit_notes.credit_note_id
    inner join invoices
        on credit_notes.invoice_id = invoices.invoice_id
    where credit_note_allocations.credit_notes_amount_cents <> 0
),

lines as (
    select * from fee_lines
    union all
    select * from credit_note_lines
),

final as (
    select
        lines.revenue_line_id as revenue_line_id,
        lines.line_type as line_type,
        lines.revenue_date as revenue_date,
        {{ billhouse.finance_month('lines.revenue_date') }} as revenue_month,
        lines.invoice_id as invoice_id,
        lines.invoice_number as invoice_number,
        lines.credit_note_number as credit_note_number,
        invoices.invoice_type as invoice_type,
        invoices.external_customer_id as external_customer_id,
        invoices.customer_name as customer_name,
        invoices.currency as currency,
        invoices.currency_exponent as currency_exponent,
        fees.external_subscription_id as external_subscription_id,
        fees.plan_code as plan_code,
        fees.fee_kind as fee_kind,
        fees.billable_metric_code as billable_metric_code,
        fees.add_on_code as add_on_code,
        fees.invoice_display_name as charge_display_name,
        lines.gross_amount_cents as gross_amount_cents,
        lines.coupons_amount_cents as coupons_amount_cents,
        lines.credit_notes_amount_cents as credit_notes_amount_cents,
        lines.gross_amount_cents - lines.coupons_amount_cents - lines.credit_notes_amount_cents
            as net_revenue_cents
    from lines
    inner join invoices
        on lines.invoice_id = invoices.invoice_id
    inner join fees
        on lines.fee_id = fees.fee_id
)

select * from final
