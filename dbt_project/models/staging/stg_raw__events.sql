with source_events as (

    select * from {{ source('raw', 'events') }}

),

renamed as (

    select
        cast(event_id as varchar) as event_id,
        cast(user_id as varchar) as user_id,
        cast(item_id as varchar) as item_id,
        cast(event_type as varchar) as event_type,
        cast(occurred_at as timestamp) as occurred_at,
        cast(value as double) as value,
        cast(session_id as varchar) as session_id,
        cast(context as varchar) as context,
        cast(attributes as varchar) as attributes,
        cast(source_file as varchar) as source_file,
        cast(source_row as bigint) as source_row,
        cast(batch_id as varchar) as batch_id,
        cast(loaded_at as timestamp) as loaded_at
    from source_events

)

select * from renamed
