with events as (

    select * from {{ ref('int_events_deduplicated') }}

),

weighted as (

    select
        event_id,
        user_id,
        item_id,
        event_type,
        occurred_at,
        value,
        {{ interaction_weight('event_type', 'value') }} as weight,
        session_id,
        context,
        loaded_at
    from events

)

select * from weighted
