with interactions as (

    select * from {{ ref('interactions') }}

),

positive_interactions as (

    select
        event_id,
        user_id,
        item_id,
        event_type,
        occurred_at,
        weight
    from interactions
    where weight > 0

),

interactions_by_recency as (

    select
        *,
        row_number() over (
            partition by user_id
            order by occurred_at desc, event_id desc
        ) as recency_rank
    from positive_interactions

),

recent_history as (

    select
        user_id,
        item_id,
        event_type,
        occurred_at,
        weight,
        recency_rank,
        event_id
    from interactions_by_recency
    where recency_rank <= {{ var('history_length') }}

)

select * from recent_history
