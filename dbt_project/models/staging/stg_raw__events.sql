with source_events as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        cast(event_id as {{ dbt.type_string() }}) as event_id,
        cast(user_id as {{ dbt.type_string() }}) as user_id,
        cast(item_id as {{ dbt.type_string() }}) as item_id,
        cast(event_type as {{ dbt.type_string() }}) as event_type,
        cast(occurred_at as timestamp) as occurred_at,
        cast(value as double) as value,
        cast(session_id as {{ dbt.type_string() }}) as session_id,
        cast(context as {{ dbt.type_string() }}) as context,
        cast(attributes as {{ dbt.type_string() }}) as attributes,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(source_row as bigint) as source_row,
        cast(batch_id as {{ dbt.type_string() }}) as batch_id,
        cast(loaded_at as timestamp) as loaded_at
    from source_events

)

select * from renamed
