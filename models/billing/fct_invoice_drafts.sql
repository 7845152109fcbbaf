{#- Invoice drafts: one per customer, currency and issuing date, totalling its fees.
    Invoicing (Python) finalizes these into the ledger, but not a draft with a
    held_reason: a fee out of range holds its invoice (macro to_minor_units). On
    ClickHouse each draft also says which events it was built from (every event of this
    events table up to this insert block: this build's marker in the duplicate index);
    the close records it with the billed fees, so that a later close looks for late
    events past it only (int_late_usage_periods). -#}
{%- set bound = billhouse.to_decimal(billhouse.max_minor_units()) -%}
{%- set sub_total = 'cast(least(greatest(totals.exact_sub_total_cents, -' ~ bound ~ '), ' ~ bound ~ ') as bigint)' -%}

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
        -- as a decimal: ClickHouse's sum of 64-bit integers wraps silently
        sum({{ billhouse.to_decimal('amount_cents') }}) as exact_sub_total_cents,
        -- a fee out of range (macro to_minor_units) holds the invoice
        min(case when abs(amount_cents) >= {{ billhouse.max_minor_units() }} then invoice_display_name end)
            as out_of_range_fee
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
        {{ sub_total }} as sub_total_cents,
        {{ sub_total }} as total_cents,
        case
            when totals.out_of_range_fee is not null then concat(
                'fee ''', totals.out_of_range_fee, ''' amounts to {{ billhouse.max_minor_units() }} minor units or more')
            when abs(totals.exact_sub_total_cents) >= {{ bound }}
                then 'its fees add up to {{ billhouse.max_minor_units() }} minor units or more'
        end as held_reason,
        {%- if billhouse.events_have_block_numbers() %}
        cast({{ billhouse.events_read_through_block(ref('int_event_identities_duplicated')) }} as Nullable(Int64))
            as events_through_block,
        cast({{ billhouse.events_table_uuid() }} as Nullable(String)) as events_table_uuid
        {%- else %}
        cast(null as bigint) as events_through_block,
        cast(null as text) as events_table_uuid
        {%- endif %}
    from totals
    inner join customers
        on totals.external_customer_id = customers.external_customer_id
    inner join currencies
        on totals.currency = currencies.currency
)

select * from final
