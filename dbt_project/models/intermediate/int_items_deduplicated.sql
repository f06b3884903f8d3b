with staged_items as (

    select * from {{ ref('stg_raw__items') }}

),

versions_ranked as (

    select
        *,
        -- The latest version of an item wins; source_file only breaks exact ties.
        row_number() over (
            partition by item_id
            order by loaded_at desc, source_row desc, source_file desc
        ) as version_rank
    from staged_items

),

latest_versions as (

    select
        item_id,
        title,
        description,
        categories,
        created_at,
        available,
        attributes,
        source_file,
        source_row,
        batch_id,
        loaded_at
    from versions_ranked
    where version_rank = 1

)

select * from latest_versions
