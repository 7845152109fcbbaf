{#- Pay-in-advance charges, billed per event: one fee per deduplicated event of a
    per-event charge (int_pay_in_advance_charges), issued at the first local midnight
    after the event both happened and arrived — so each daily close bills the events of
    the day before, and a late arrival the next day.

    An event's fee is the charge's amount over its bucket's peak units through the
    event minus the amount over the peak before it (the first event of a bucket: minus
    nothing; int_pay_in_advance_events), priced by the same charge-model macros as the
    arrears fee, with the price of the event's filter; percentage takes the running sum
    of the per-event amounts (free allowance, fixed amount, per-transaction min/max as
    in int_percentage_event_amounts) and bills its increase above the highest running
    sum so far. No fee is negative: the fees of a bucket add up to the amount of its
    peak — the arrears amount of its events when the units never fall; each fee is
    rounded half-up on its own. -#}
{#- built empty without a per-event charge in the catalog (macro built_only_if) -#}
{% call billhouse.built_only_if(billhouse.relation_has_rows(ref('int_pay_in_advance_charges'))) %}
with pay_in_advance_events as (
    select * from {{ ref('int_pay_in_advance_events') }}
),

per_event_charges as (
    select * from {{ ref('int_pay_in_advance_charges') }}
),

subscriptions as (
    select * from {{ ref('stg_billhouse__subscriptions') }}
),

customers as (
    select * from {{ ref('stg_billhouse__customers') }}
),

prices as (
    select * from {{ ref('stg_billhouse__charge_prices') }}
),

ranges as (
    select * from {{ ref('stg_billhouse__charge_ranges') }}
),

currencies as (
    select * from {{ ref('currencies') }}
),

charged_events as (
    select
        pay_in_advance_events.*,
        per_event_charges.charge_model as charge_model,
        per_event_charges.billable_metric_code as billable_metric_code
    from pay_in_advance_events
    inner join per_event_charges
        on pay_in_advance_events.charge_id = per_event_charges.charge_id
),

billed_events as (
    select * from charged_events
    where closes_at > {{ billhouse.utc_instant(billhouse.close_setting('close_from')) }}
        and closes_at <= {{ billhouse.utc_instant(billhouse.close_setting('as_of')) }}
),

{#- graduated and graduated_percentage: the amount of every range, through the event
    and before it (nothing before a bucket's first event) -#}
tiered_amounts as (
    select
        billed_events.fee_key as fee_key,
        sum(
            case billed_events.charge_model
                when 'graduated' then {{ billhouse.graduated(
                    'billed_events.units_after', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                    'coalesce(ranges.per_unit_amount, 0)', 'ranges.flat_amount') }}
                else {{ billhouse.graduated_percentage(
                    'billed_events.units_after', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                    'coalesce(ranges.rate, 0)', 'ranges.flat_amount') }}
            end
        ) as amount_after,
        sum(
            case
                when billed_events.event_number = 1 then {{ billhouse.decimal_zero() }}
                when billed_events.charge_model = 'graduated' then {{ billhouse.graduated(
                    'billed_events.units_before', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                    'coalesce(ranges.per_unit_amount, 0)', 'ranges.flat_amount') }}
                else {{ billhouse.graduated_percentage(
                    'billed_events.units_before', 'ranges.range_index', 'ranges.lower_bound', 'ranges.to_value',
                    'coalesce(ranges.rate, 0)', 'ranges.flat_amount') }}
            end
        ) as amount_before
    from billed_events
    inner join ranges
        on billed_events.charge_price_id = ranges.charge_price_id
    where billed_events.charge_model in ('graduated', 'graduated_percentage')
    group by billed_events.fee_key
),

{#- percentage: every event of the bucket in order (the free allowance counts from the
    period's first event), each one's amount, and their running sum -#}
percentage_events as (
    select
        charged_events.fee_key as fee_key,
        charged_events.bucket_key as bucket_key,
        charged_events.event_number as event_number,
        charged_events.event_value as event_value,
        charged_events.cumulative_value as running_total,
        prices.rate as rate,
        prices.fixed_amount as fixed_amount,
        prices.free_units_per_events as free_units_per_events,
        prices.free_units_per_total_aggregation as free_units_per_total_aggregation,
        prices.per_transaction_min_amount as per_transaction_min_amount,
        prices.per_transaction_max_amount as per_transaction_max_amount
    from charged_events
    inner join prices
        on charged_events.charge_price_id = prices.charge_price_id
    where charged_events.charge_model = 'percentage'
),

percentage_allowance as (
    select
        percentage_events.*,
        {{ billhouse.percentage_first_reaching_event(
            'event_number', 'running_total', 'free_units_per_total_aggregation', 'bucket_key') }}
            as first_reaching_amount
    from percentage_events
),

percentage_paid as (
    select
        percentage_allowance.*,
        {{ billhouse.percentage_paid_value(
            'event_value', 'event_number', 'running_total', 'first_reaching_amount',
            'free_units_per_events', 'free_units_per_total_aggregation') }} as paid_value
    from percentage_allowance
),

percentage_amounts as (
    select
        percentage_paid.*,
        {{ billhouse.percentage('paid_value', 'rate', 'fixed_amount', 'per_transaction_min_amount', 'per_transaction_max_amount') }}
            as event_amount
    from percentage_paid
),

percentage_through as (
    select
        fee_key,
        bucket_key,
        event_number,
        sum(event_amount) over (
            partition by bucket_key
            order by event_number
            rows between unbounded preceding and current row
        ) as amount_through
    from percentage_amounts
),

{#- what the bucket has billed before and through the event: the highest running amount
    so far, floored at 0 (a negative event lowers the running amount, not the billed) -#}
percentage_running as (
    select
        fee_key,
        greatest(coalesce(max(amount_through) over (
            partition by bucket_key
            order by event_number
            rows between unbounded preceding and 1 preceding
        ), {{ billhouse.decimal_zero() }}), {{ billhouse.decimal_zero() }}) as billed_before,
        greatest(max(amount_through) over (
            partition by bucket_key
            order by event_number
            rows between unbounded preceding and current row
        ), {{ billhouse.decimal_zero() }}) as billed_through
    from percentage_through
),

priced as (
    -- ClickHouse evaluates every CASE branch, so other models' null prices are coalesced
    select
        billed_events.fee_key as fee_key,
        billed_events.bucket_key as bucket_key,
        billed_events.subscription_period_key as subscription_period_key,
        billed_events.external_subscription_id as external_subscription_id,
        billed_events.charge_period_start as charge_period_start,
        billed_events.charge_period_end as charge_period_end,
        billed_events.charge_id as charge_id,
        billed_events.filter_index as filter_index,
        billed_events.group_key as group_key,
        billed_events.transaction_id as transaction_id,
        billed_events.event_at as event_at,
        billed_events.issuing_date as issuing_date,
        billed_events.closes_at as closes_at,
        billed_events.event_number as event_number,
        billed_events.units_before as units_before,
        billed_events.charge_model as charge_model,
        billed_events.billable_metric_code as billable_metric_code,
        subscriptions.external_customer_id as external_customer_id,
        subscriptions.plan_code as plan_code,
        customers.currency as currency,
        prices.invoice_display_name as invoice_display_name,
        {{ billhouse.to_decimal('coalesce(prices.amount, 0)') }} as standard_amount,
        {{ billhouse.to_decimal('billed_events.units_after - billed_events.units_before') }} as units,
        cast(case billed_events.charge_model
            when 'standard' then {{ billhouse.standard(
                'billed_events.units_after - billed_events.units_before', 'coalesce(prices.amount, 0)') }}
            when 'package' then {{ billhouse.to_decimal(
                billhouse.package('billed_events.units_after', 'coalesce(prices.amount, 0)',
                                  'coalesce(prices.package_size, 1)', 'prices.free_units')
                ~ ' - ' ~ billhouse.package('billed_events.units_before', 'coalesce(prices.amount, 0)',
                                            'coalesce(prices.package_size, 1)', 'prices.free_units')) }}
            when 'percentage' then {{ billhouse.to_decimal(
                'coalesce(percentage_running.billed_through, 0) - coalesce(percentage_running.billed_before, 0)') }}
            else {{ billhouse.to_decimal(
                'coalesce(tiered_amounts.amount_after, 0) - coalesce(tiered_amounts.amount_before, 0)') }}
        end as {{ billhouse.decimal_type() }}) as precise_amount,
        currencies.minor_units_per_major as minor_units_per_major
    from billed_events
    inner join subscriptions
        on billed_events.external_subscription_id = subscriptions.external_subscription_id
    inner join customers
        on subscriptions.external_customer_id = customers.external_customer_id
    inner join prices
        on billed_events.charge_price_id = prices.charge_price_id
    inner join currencies
        on customers.currency = currencies.currency
    left join tiered_amounts
        on billed_events.fee_key = tiered_amounts.fee_key
    left join percentage_running
        on billed_events.fee_key = percentage_running.fee_key
),

final as (
    select
        fee_key,
        bucket_key,
        subscription_period_key,
        external_subscription_id,
        external_customer_id,
        plan_code,
        currency,
        event_at as period_start,
        event_at as period_end,
        charge_period_start,
        charge_period_end,
        issuing_date,
        closes_at,
        charge_id,
        filter_index,
        group_key,
        billable_metric_code,
        charge_model,
        invoice_display_name,
        transaction_id,
        event_number,
        units_before,
        units,
        -- the price of one unit: the standard model's amount, else the average (as Lago shows it)
        cast(case
            when charge_model = 'standard' then standard_amount
            when units != 0 then {{ billhouse.to_decimal('precise_amount / units') }}
            else {{ billhouse.decimal_zero() }}
        end as {{ billhouse.decimal_type() }}) as unit_amount,
        precise_amount,
        {{ billhouse.to_minor_units('precise_amount', 'minor_units_per_major') }} as amount_cents
    from priced
)

select * from final
{% endcall %}
