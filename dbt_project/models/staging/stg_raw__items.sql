with source_items as (

    select * from {{ source('raw', 'items') }}

),

renamed as (

    select
        cast(item_id as {{ dbt.type_string() }}) as item_id,
        cast(title as {{ dbt.type_string() }}) as title,
        cast(description as {{ dbt.type_string() }}) as description,
        cast(categories as {{ dbt.type_string() }}) as categories,
        cast(created_at as timestamp) as created_at,
        cast(available as boolean) as available,
        cast(attributes as {{ dbt.type_string() }}) as attributes,
        cast(source_file as {{ dbt.type_string() }}) as source_file,
        cast(source_row as bigint) as source_row,
        cast(batch_id as {{ dbt.type_string() }}) as batch_id,
        cast(loaded_at as timestamp) as loaded_at
    from source_items

)

select * from renamed
