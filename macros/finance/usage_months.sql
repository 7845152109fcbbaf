{#-
    How fct_usage is maintained on ClickHouse: month by month (partition toYYYYMM of
    usage_date, dbt-clickhouse's insert_overwrite strategy). usage_months_plan() decides,
    when the model is compiled, what this build recomputes:

    - 'full': every month. First build or --full-refresh; the mart is empty or was built
      by another events table (its UUID: a re-created table restarts block numbers); or
      the inputs that give past months their values changed: the billable metrics (code,
      aggregation_type, field_name), kept as a fingerprint (cityHash64 of their sorted
      rows) on every row of the mart, or the customer of a subscription the previous
      build knew (changed, or the subscription removed), compared with the mapping that
      build used (the table fct_usage__subscription_customers, written by the post-hook
      usage_subscription_customers_snapshot()). A new subscription changes no past row:
      its events are loaded after its creation, so they are recomputed as new ones.
    - 'months': the UTC days of the events loaded since the mart's watermark (insert
      block number `_block_number` above max(computed_through_block), which is how far
      int_event_identities_duplicated had scanned the events), and the days of every
      copy of the identities those events resent (a new copy may outrank an old one:
      then both days change) — `days` — and the months that hold them — `months`, the
      partitions the build replaces. Only those days are recomputed from the events
      (read with constant month bounds, so a raw table partitioned by month reads those
      months only); the months' other days are copied from the mart as they are, and
      stamped as current through this build. A daily close thus recomputes the days it
      loaded events for, not the month so far (20 s a refresh at the end of a month of
      100 M events when whole months were recomputed). Day partitions would spare the
      copy, but a full build would write a part per day into every insert block.
    - 'none': nothing loaded since; the build inserts nothing.

    The plan is written into the compiled SQL (a comment) so that the post-hook
    clear_stale_usage_months() can remove what insert_overwrite cannot: a recomputed
    month with no rows left is absent from the new data, so its partition is not replaced.
-#}

{% macro usage_months_plan(metrics_relation, subscriptions_relation, duplicated_relation) %}
    {%- set raw_events = source('billhouse', 'events') -%}
    {%- set plan = {
        'mode': 'full', 'months': [], 'days': [], 'through_block': '0', 'events_table_uuid': '',
        'inputs_fingerprint': '0', 'previous_block': none
    } -%}
    {%- if not execute or not billhouse.events_have_block_numbers() -%}
        {{ return(plan) }}
    {%- endif -%}

    {#- the watermark: how far the duplicate index has scanned the current events table
        (its markers, copies = 0). Events loaded after that scan may be resends it does not
        list yet, so they count as watermark-new again in the next build, once indexed. -#}
    {%- set current = run_query(
        "select"
        ~ " toString(" ~ billhouse.events_read_through_block(duplicated_relation) ~ ") as through_block,"
        ~ " " ~ billhouse.events_table_uuid() ~ " as events_table_uuid,"
        ~ " toString(cityHash64("
        ~ "(select arraySort(groupArray((billable_metric_code, aggregation_type, coalesce(field_name, ''))))"
        ~ " from " ~ metrics_relation ~ "))) as inputs_fingerprint"
    ).rows[0] -%}
    {%- do plan.update({
        'through_block': current['through_block'],
        'events_table_uuid': current['events_table_uuid'],
        'inputs_fingerprint': current['inputs_fingerprint'],
    }) -%}

    {%- if not is_incremental() -%}
        {{ return(plan) }}
    {%- endif -%}

    {%- set built = run_query(
        "select count() as row_count,"
        ~ " toString(max(computed_through_block)) as through_block,"
        ~ " uniqExact(events_table_uuid) = 1 and any(events_table_uuid) = '" ~ plan.events_table_uuid ~ "' as same_table,"
        ~ " uniqExact(inputs_fingerprint) = 1 and toString(any(inputs_fingerprint)) = '" ~ plan.inputs_fingerprint ~ "' as same_inputs"
        ~ " from " ~ this
    ).rows[0] -%}
    {%- if built['row_count'] == 0 or not built['same_table'] or not built['same_inputs'] -%}
        {{ return(plan) }}
    {%- endif -%}

    {#- a subscription the previous build knew now has another customer, or is gone -#}
    {%- set mapping = billhouse.usage_subscription_customers_relation() -%}
    {%- if adapter.get_relation(mapping.database, mapping.schema, mapping.identifier) is none -%}
        {{ return(plan) }}
    {%- endif -%}
    {%- set remapped = run_query(
        "select count() as n from " ~ mapping
        ~ " where (external_subscription_id, external_customer_id) not in"
        ~ " (select external_subscription_id, external_customer_id from " ~ subscriptions_relation ~ ")"
    ).rows[0]['n'] -%}
    {%- if remapped > 0 -%}
        {{ return(plan) }}
    {%- endif -%}

    {#- the days of the new events, and of every copy of the identities they resent
        (found like int_event_identities_duplicated finds them: the subscription is the
        raw table's primary key prefix, so only the resent events' subscriptions are read) -#}
    {%- set touched = run_query(
        "with new_events as ("
        ~ " select identity_hash, external_subscription_id, timestamp from " ~ raw_events
        ~ " where " ~ billhouse.events_stored_after(built['through_block']) ~ "),"
        ~ " resent as ("
        ~ " select identity_hash, external_subscription_id from new_events"
        ~ " where identity_hash in (select identity_hash from " ~ duplicated_relation ~ " where copies > 1)),"
        ~ " touched as ("
        ~ " select distinct toDate(timestamp, 'UTC') as touched_day from new_events"
        ~ " union distinct"
        ~ " select distinct toDate(timestamp, 'UTC') as touched_day from " ~ raw_events
        ~ " where external_subscription_id in (select external_subscription_id from resent)"
        ~ " and identity_hash in (select identity_hash from resent))"
        ~ " select toString(touched_day) as day, toString(toStartOfMonth(touched_day)) as month_start,"
        ~ " toString(addMonths(toStartOfMonth(touched_day), 1)) as next_month_start"
        ~ " from touched order by touched_day"
    ) -%}
    {%- set months = [] -%}
    {%- set days = [] -%}
    {%- for row in touched.rows -%}
        {%- do days.append(row['day']) -%}
        {%- if [row['month_start'], row['next_month_start']] not in months -%}
            {%- do months.append([row['month_start'], row['next_month_start']]) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- do plan.update({
        'mode': ('months' if months else 'none'),
        'months': months,
        'days': days,
        'previous_block': built['through_block'],
    }) -%}
    {{ return(plan) }}
{% endmacro %}


{#- A constant condition on an instant column: inside one of the plan's months (UTC).
    Constant bounds let ClickHouse skip the other months' partitions. -#}
{% macro usage_month_bounds(instant, months) -%}
    {%- if not months -%}
        1 = 0
    {%- else -%}
        ({%- for month in months %}
            {{- ' or ' if not loop.first }}({{ instant }} >= toDateTime64('{{ month[0] }} 00:00:00', 3, 'UTC')
            and {{ instant }} < toDateTime64('{{ month[1] }} 00:00:00', 3, 'UTC'))
        {%- endfor -%})
    {%- endif -%}
{%- endmacro %}


{#- A constant condition on a date column: in one of the plan's months. -#}
{% macro usage_month_in(date_column, months) -%}
    toStartOfMonth({{ date_column }}) in (
        {%- for month in months %}toDate('{{ month[0] }}'){{ ', ' if not loop.last }}{% endfor -%}
    )
{%- endmacro %}


{#- A constant condition on a date column: one of the plan's days. -#}
{% macro usage_day_in(date_column, days) -%}
    {%- if not days -%}
        1 = 0
    {%- else -%}
        {{ date_column }} in ({% for day in days %}toDate('{{ day }}'){{ ', ' if not loop.last }}{% endfor %})
    {%- endif -%}
{%- endmacro %}


{#- The plan as a SQL comment in the compiled model, read back by the post-hook. -#}
{% macro usage_months_plan_comment(plan) -%}
    /* usage_months_plan {{ tojson(plan) }} */
{%- endmacro %}


{#- The subscription -> customer mapping the latest build of fct_usage used (ClickHouse). -#}
{% macro usage_subscription_customers_relation() -%}
    {{ return(this.incorporate(path={'identifier': this.identifier ~ '__subscription_customers'})) }}
{%- endmacro %}


{#- Post-hook of fct_usage (ClickHouse): record the mapping this build used, which the
    next build compares with the subscriptions then (usage_months_plan). -#}
{% macro usage_subscription_customers_snapshot(subscriptions_relation) %}
    {%- if not execute -%}
        {{ return('') }}
    {%- endif -%}
    {{ return(
        "create or replace table " ~ billhouse.usage_subscription_customers_relation()
        ~ " engine = MergeTree order by external_subscription_id as"
        ~ " select external_subscription_id, external_customer_id from " ~ subscriptions_relation
    ) }}
{% endmacro %}


{#- Post-hook of fct_usage (ClickHouse): after insert_overwrite replaced the recomputed
    months that have rows, delete the rows this build did not write in the months it
    recomputed (every month for a full recompute). Nothing to do on a first build or
    --full-refresh (a new table) or when nothing was recomputed. -#}
{% macro clear_stale_usage_months() %}
    {%- set marker = '/* usage_months_plan ' -%}
    {%- set compiled = model.compiled_code or '' -%}
    {%- if not execute or marker not in compiled -%}
        {{ return('') }}
    {%- endif -%}
    {%- set plan = fromjson(compiled.split(marker)[1].split(' */')[0]) -%}
    {%- if plan.mode == 'none' -%}
        {{ return('') }}
    {%- endif -%}
    {%- set written_by_others -%}
        not (computed_through_block = {{ plan.through_block }}
            and events_table_uuid = '{{ plan.events_table_uuid }}'
            and inputs_fingerprint = {{ plan.inputs_fingerprint }})
        {%- if plan.mode == 'months' %}
        and {{ billhouse.usage_month_in('usage_date', plan.months) }}
        {%- endif %}
    {%- endset -%}
    {%- set stale = run_query("select count() as n from " ~ this ~ " where " ~ written_by_others).rows[0]['n'] -%}
    {%- if stale == 0 -%}
        {{ return('') }}
    {%- endif -%}
    {{ return("delete from " ~ this ~ " where " ~ written_by_others) }}
{% endmacro %}
