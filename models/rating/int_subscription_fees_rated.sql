{#- One subscription fee per period whose fee is issued in this close's window: in
    arrears at the period's end, or with `pay_in_advance` at its start. A partial period
    (first or last, calendar billing, or a termination) and trial days are prorated by
    days in the customer's timezone: amount × chargeable days ÷ days in the full period,
    the start and termination days counting in full. -#}
with periods as (
    select * from {{ ref('int_subscription_periods') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

issued as (
    select *
    from periods
    where subscription_fee_closes_at > {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }}
        and subscription_fee_closes_at <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

priced as (
    select
        issued.*,
        {{ billhouse.to_decimal('issued.plan_amount_cents') }} / currencies.minor_units_per_major as unit_amount,
        {{ billhouse.to_decimal('issued.chargeable_days') }} / issued.period_days as units,
        {{ billhouse.to_decimal('issued.plan_amount_cents') }} * issued.chargeable_days
            / (issued.period_days * currencies.minor_units_per_major) as precise_amount,
        currencies.minor_units_per_major as minor_units_per_major
    from issued
    inner join currencies
        on issued.currency = currencies.currency
),

final as (
    select
        concat(subscription_period_key, '/subscription') as fee_key,
        subscription_period_key,
        external_subscription_id,
        external_customer_id,
        plan_code,
        currency,
        timezone,
        period_start,
        period_end,
        subscription_fee_issuing_date as issuing_date,
        subscription_fee_closes_at as closes_at,
        pay_in_advance,
        period_days,
        billed_days,
        chargeable_days,
        units,
        unit_amount,
        precise_amount,
        {{ billhouse.to_minor_units('precise_amount', 'minor_units_per_major') }} as amount_cents
    from priced
)

select * from final
