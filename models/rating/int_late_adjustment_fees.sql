{#- Late-event adjustments: for each usage fee of an already-invoiced period that got
    late events, the re-rated fee minus what earlier invoices billed for it (the fee and
    any earlier adjustment). Billed on the customer's invoice of this close (the latest
    issuing date of its regular fees in the window), labelled with the earlier period;
    once billed it is part of "what was billed", so it is never billed twice. Only an
    increase is billed (units and amount each floored at 0): late usage that lowers a
    fee (a negative sum_agg value) bills nothing and is not refunded — a finalized
    invoice stands, corrections are credit notes — and later late usage bills only
    what exceeds what was billed (docs/billing-clock.md, "Negative usage").

    A customer with no subscription left to invoice (each stopped being billed by the
    close's day: the clock's subscription_end_date) has no next invoice to wait for: its
    adjustments go on an invoice of their own, dated the close's day in its timezone. -#}
{%- set as_of = billhouse.utc_instant(billhouse.close_setting('as_of')) %}
{{ config(meta={'customer_timezones': ['close_timezone']}) }}
{#- built empty without a late period (an invoiced period with late usage) (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.query_has_rows('select 1 from ' ~ ref('int_billing_periods') ~ ' where is_late')) %}
with periods as (
    select * from {{ ref('int_billing_periods') }}
),

rated as (
    select * from {{ ref('int_charge_fees_rated') }}
),

subscription_fees as (
    select * from {{ ref('int_subscription_fees_rated') }}
),

per_event_fees as (
    select * from {{ ref('int_pay_in_advance_charge_fees') }}
),

per_event_charges as (
    select charge_id from {{ ref('int_pay_in_advance_charges') }}
),

billed_fees as (
    select * from {{ source('billhouse', 'billed_fees') }} {{ billhouse.latest_versions_modifier() }}
),

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

successors as (
    {{ billhouse.subscription_successors('subscriptions') }}
),

-- for the customers with late usage, the local date each of their subscriptions stops
-- being billed (exclusive; null while it runs) and the close's day, in their timezone
subscriptions_billed_until as (
    select
        subscriptions.external_customer_id as external_customer_id,
        {{ billhouse.subscription_end_date(
            'successors.has_successor', 'successors.successor_at',
            'subscriptions.terminated_at', 'subscriptions.ending_at', 'customers.timezone') }} as end_date,
        {{ billhouse.local_date(as_of, 'customers.timezone') }} as as_of_date
    from subscriptions
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    left join successors
        on subscriptions.external_subscription_id = successors.external_subscription_id
    where subscriptions.external_customer_id in (select external_customer_id from periods where is_late)
),

-- customers with late usage and no subscription that will invoice again
ended_customers as (
    select
        customers.external_customer_id as external_customer_id,
        customers.currency as currency,
        {{ billhouse.local_date(as_of, 'customers.timezone') }} as issuing_date
    from customers
    where customers.external_customer_id in (select external_customer_id from periods where is_late)
        and customers.external_customer_id not in (
            select external_customer_id from subscriptions_billed_until
            where end_date is null or end_date > as_of_date
        )
),

-- the invoice each customer gets from this close: its latest regular issuing date, or
-- for a customer with no subscription left, the close's day
adjusting_dates as (
    select external_customer_id, currency, max(issuing_date) as adjusting_issuing_date
    from (
        select external_customer_id, currency, issuing_date from subscription_fees
        union all
        select external_customer_id, currency, issuing_date from periods where closes_in_window
        union all
        select external_customer_id, currency, issuing_date from per_event_fees
        union all
        select external_customer_id, currency, issuing_date from ended_customers
    ) as regular
    group by external_customer_id, currency
),

late_rated as (
    select
        rated.fee_key as adjusted_fee_key,
        rated.external_subscription_id as external_subscription_id,
        rated.external_customer_id as external_customer_id,
        rated.plan_code as plan_code,
        rated.currency as currency,
        rated.period_start as period_start,
        rated.period_end as period_end,
        rated.charge_id as charge_id,
        rated.billable_metric_code as billable_metric_code,
        rated.charge_model as charge_model,
        rated.filter_index as filter_index,
        rated.group_key as group_key,
        rated.invoice_display_name as invoice_display_name,
        rated.unit_amount as unit_amount,
        rated.units as units,
        rated.precise_amount as precise_amount,
        rated.amount_cents as amount_cents,
        adjusting_dates.adjusting_issuing_date as issuing_date
    from rated
    inner join periods
        on rated.subscription_period_key = periods.subscription_period_key
    inner join adjusting_dates
        on rated.external_customer_id = adjusting_dates.external_customer_id
        and rated.currency = adjusting_dates.currency
    where periods.is_late
        and periods.issuing_date < adjusting_dates.adjusting_issuing_date
        and rated.charge_id not in (select charge_id from per_event_charges)
),

already_billed as (
    select
        late_rated.adjusted_fee_key as adjusted_fee_key,
        sum(billed_fees.units) as units,
        sum(billed_fees.precise_amount) as precise_amount,
        sum(billed_fees.amount_cents) as amount_cents
    from late_rated
    inner join billed_fees
        on late_rated.adjusted_fee_key = billed_fees.adjusted_fee_key
    where billed_fees.issuing_date < late_rated.issuing_date
    group by late_rated.adjusted_fee_key
),

final as (
    select
        concat(
            late_rated.adjusted_fee_key, '/adjustment/',
            cast(late_rated.issuing_date as {{ dbt.type_string() }})
        ) as fee_key,
        late_rated.adjusted_fee_key as adjusted_fee_key,
        late_rated.external_subscription_id as external_subscription_id,
        late_rated.external_customer_id as external_customer_id,
        late_rated.plan_code as plan_code,
        late_rated.currency as currency,
        late_rated.period_start as period_start,
        late_rated.period_end as period_end,
        late_rated.issuing_date as issuing_date,
        late_rated.charge_id as charge_id,
        late_rated.billable_metric_code as billable_metric_code,
        late_rated.charge_model as charge_model,
        late_rated.filter_index as filter_index,
        late_rated.group_key as group_key,
        late_rated.invoice_display_name as invoice_display_name,
        late_rated.unit_amount as unit_amount,
        greatest(late_rated.units - coalesce(already_billed.units, 0), {{ billhouse.decimal_zero() }}) as units,
        greatest(late_rated.precise_amount - coalesce(already_billed.precise_amount, 0), {{ billhouse.decimal_zero() }})
            as precise_amount,
        greatest(late_rated.amount_cents - coalesce(already_billed.amount_cents, 0), 0) as amount_cents
    from late_rated
    left join already_billed
        on late_rated.adjusted_fee_key = already_billed.adjusted_fee_key
    where late_rated.units > coalesce(already_billed.units, 0)
        or late_rated.amount_cents > coalesce(already_billed.amount_cents, 0)
)

select * from final
{% endcall %}
