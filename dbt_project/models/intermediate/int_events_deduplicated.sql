with staged_events as (

    select * from {{ ref('stg_raw__events') }}

),

deliveries_ranked as (

    select
        *,
        -- A re-delivered event keeps its latest copy; source_file only breaks exact ties.
        row_number() over (
            partition by event_id
            order by loaded_at desc, source_row desc, source_file desc
        ) as delivery_rank
    from staged_events

),

latest_deliveries as (

    select
        event_id,
        user_id,
        item_id,
        event_type,
        occurred_at,
        value,
        session_id,
        context,
        attributes,
        source_file,
        source_row,
        batch_id,
        loaded_at
    from deliveries_ranked
    where delivery_rank = 1

)

select * from latest_deliveries
