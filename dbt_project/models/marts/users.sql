with interactions as (

    select * from {{ ref('interactions') }}

),

user_activity as (

    select
        user_id,
        min(occurred_at) as first_event_at,
        max(occurred_at) as last_event_at,
        count(*) as event_count,
        count(distinct item_id) as item_count
    from interactions
    group by user_id

)

select * from user_activity
