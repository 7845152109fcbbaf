{#- Every fee this close issues, with the invoice draft it goes on: one invoice per
    customer, currency and issuing date (semantics.md). The issuing date is the local
    date, in the customer's timezone, of the instant the fee closes. Fees: subscription
    fees (in arrears or in advance), usage charges and minimum true-ups of the periods
    that ended in the window (in arrears), pay-in-advance charges per event, and
    late-event adjustments for earlier periods (billing clock, issue 4). -#}
with subscription_fees as (
    select * from {{ ref('int_subscription_fees_rated') }}
),

charge_fees as (
    select * from {{ ref('int_charge_fees_rated') }}
),

true_ups as (
    select * from {{ ref('int_charge_minimum_true_ups') }}
),

-- billing clock (issue 4): what closes in this window, per-event charges, adjustments
periods_closing as (
    select subscription_period_key from {{ ref('int_billing_periods') }} where closes_in_window
),

per_event_charges as (
    select * from {{ ref('int_pay_in_advance_charges') }}
),

per_event_fees as (
    select * from {{ ref('int_pay_in_advance_charge_fees') }}
),

adjustment_fees as (
    select * from {{ ref('int_late_adjustment_fees') }}
),

-- usage charges billed in arrears: the periods closing now, without per-event charges
arrears_charge_fees as (
    select * from charge_fees
    where subscription_period_key in (select subscription_period_key from periods_closing)
        and charge_id not in (select charge_id from per_event_charges)
),

plans as (
    select * from {{ ref('stg_billhouse__plans') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

unioned as (
    select
        subscription_fees.fee_key as fee_key,
        'subscription' as fee_kind,
        subscription_fees.external_subscription_id as external_subscription_id,
        subscription_fees.external_customer_id as external_customer_id,
        subscription_fees.plan_code as plan_code,
        subscription_fees.currency as currency,
        subscription_fees.period_start as period_start,
        subscription_fees.period_end as period_end,
        subscription_fees.issuing_date as issuing_date,
        {{ billhouse.null_string() }} as charge_id,
        {{ billhouse.null_string() }} as billable_metric_code,
        {{ billhouse.null_string() }} as charge_model,
        -1 as filter_index,
        '' as group_key,
        0 as is_true_up,
        plans.plan_name as invoice_display_name,
        0 as sort_order,
        subscription_fees.units as units,
        subscription_fees.unit_amount as unit_amount,
        subscription_fees.precise_amount as precise_amount,
        subscription_fees.amount_cents as amount_cents
    from subscription_fees
    inner join plans
        on subscription_fees.plan_code = plans.plan_code

    union all

    select
        true_ups.fee_key as fee_key,
        'charge' as fee_kind,
        true_ups.external_subscription_id as external_subscription_id,
        true_ups.external_customer_id as external_customer_id,
        true_ups.plan_code as plan_code,
        true_ups.currency as currency,
        true_ups.period_start as period_start,
        true_ups.period_end as period_end,
        true_ups.issuing_date as issuing_date,
        true_ups.charge_id as charge_id,
        true_ups.billable_metric_code as billable_metric_code,
        true_ups.charge_model as charge_model,
        -1 as filter_index,
        '' as group_key,
        1 as is_true_up,
        true_ups.invoice_display_name as invoice_display_name,
        2 as sort_order,
        {{ billhouse.to_decimal('1') }} as units,
        {{ billhouse.to_decimal('true_ups.amount_cents') }} / currencies.minor_units_per_major as unit_amount,
        {{ billhouse.to_decimal('true_ups.amount_cents') }} / currencies.minor_units_per_major as precise_amount,
        true_ups.amount_cents as amount_cents
    from true_ups
    inner join currencies
        on true_ups.currency = currencies.currency
    where true_ups.subscription_period_key in (select subscription_period_key from periods_closing)

{#- usage fees, all of one shape: (source, fee kind, sort order, display-name suffix) -#}
{%- for fees, fee_kind, sort_order, name_suffix in [
    ('arrears_charge_fees', 'charge', 1, none),
    ('per_event_fees', 'charge', 1, none),
    ('adjustment_fees', 'adjustment', 3, ' (late usage, earlier period)'),
] %}

    union all

    select
        fee_key,
        '{{ fee_kind }}' as fee_kind,
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
        filter_index,
        group_key,
        0 as is_true_up,
        {{ "concat(invoice_display_name, '" ~ name_suffix ~ "')" if name_suffix else 'invoice_display_name' }}
            as invoice_display_name,
        {{ sort_order }} as sort_order,
        units,
        unit_amount,
        precise_amount,
        amount_cents
    from {{ fees }}
{%- endfor %}
),

keyed as (
    select
        concat(
            external_customer_id, '/', currency, '/',
            cast(issuing_date as {{ dbt.type_string() }})
        ) as invoice_key,
        fee_key,
        fee_kind,
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
        filter_index,
        group_key,
        is_true_up,
        invoice_display_name,
        sort_order,
        units,
        unit_amount,
        precise_amount,
        amount_cents
    from unioned
),

-- the fees of finalized invoices (mirrored from the ledger after each close) that can
-- share a key with this close's: a fee key names its subscription's period (by local
-- start date), and an invoice bills a period on or after the period's first local day,
-- which is never before the UTC date of its start. Fees issued earlier, which grow by
-- every close, are skipped (with a day of margin).
billed_fees as (
    select * from {{ source('billhouse', 'billed_fees') }} {{ billhouse.latest_versions_modifier() }}
    {{ billhouse.before_latest_versions_filter() }} issuing_date >= (
        select {{ billhouse.utc_date(dbt.dateadd('day', -1, 'min(period_start)')) }} from keyed
    )
),

{#- A fee already on a finalized invoice is never drafted onto another one. It happens
    when a termination is recorded after its period was invoiced: the period is cut,
    closes earlier, and would land on a new invoice date with the same fee keys. What
    was invoiced stands; the unused subscription days are credited (termination credit
    notes, docs/billing-clock.md). A re-run drafts the same invoice again (same key),
    which the ledger returns unchanged. -#}
final as (
    select keyed.*
    from keyed
    left join billed_fees
        on keyed.fee_key = billed_fees.fee_key
    where billed_fees.fee_key is null
        or billed_fees.invoice_key = keyed.invoice_key
)

select * from final
