with source as (
    select * from {{ source('billhouse', 'billable_metrics') }}
),

renamed as (
    select
        code as billable_metric_code,
        name as billable_metric_name,
        aggregation_type,
        field_name,
        recurring,
        expression,
        rounding_function,
        rounding_precision,
        expression_clickhouse,
        expression_postgres
    from source
)

select * from renamed
