with catalog as (

    select * from {{ ref('int_items_deduplicated') }}

),

interactions as (

    select * from {{ ref('interactions') }}

),

item_activity as (

    select
        item_id,
        count(*) as interaction_count,
        count(distinct user_id) as user_count,
        min(occurred_at) as first_interaction_at,
        max(occurred_at) as last_interaction_at
    from interactions
    group by item_id

),

catalog_with_activity as (

    select
        catalog.item_id,
        catalog.title,
        catalog.description,
        catalog.categories,
        catalog.created_at,
        catalog.available,
        catalog.attributes,
        coalesce(item_activity.interaction_count, 0) as interaction_count,
        coalesce(item_activity.user_count, 0) as user_count,
        item_activity.first_interaction_at,
        item_activity.last_interaction_at
    from catalog
    left join item_activity
        on catalog.item_id = item_activity.item_id

)

select * from catalog_with_activity
