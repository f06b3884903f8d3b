with source_items as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        cast(item_id as varchar) as item_id,
        cast(title as varchar) as title,
        cast(description as varchar) as description,
        cast(categories as varchar) as categories,
        cast(created_at as timestamp) as created_at,
        cast(available as boolean) as available,
        cast(attributes as varchar) as attributes,
        cast(source_file as varchar) as source_file,
        cast(source_row as bigint) as source_row,
        cast(batch_id as varchar) as batch_id,
        cast(loaded_at as timestamp) as loaded_at
    from source_items

)

select * from renamed
