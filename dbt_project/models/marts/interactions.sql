{{
    config(
        materialized=incremental_where_supported(),
        unique_key='event_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns'
    )
}}

{#-
    Incremental on load time, not event time: a late event with an old occurred_at still arrives
    in a new load batch, and a re-delivered event_id replaces its earlier row. A re-run with no new
    batch inserts nothing. Changing the event_weights var needs a --full-refresh to reweigh old rows.
-#}

with weighted_interactions as (

    select * from {{ ref('int_interactions_weighted') }}

),

new_interactions as (

    select
        event_id,
        user_id,
        item_id,
        event_type,
        occurred_at,
        value,
        weight,
        session_id,
        context,
        loaded_at
    from weighted_interactions
    {% if is_incremental() %}
        where
            loaded_at > (
                select coalesce(max(already_loaded.loaded_at), timestamp '1970-01-01')
                from {{ this }} as already_loaded
            )
    {% endif %}

)

select * from new_interactions
