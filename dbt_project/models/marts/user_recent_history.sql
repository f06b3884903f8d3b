{{
    config(
        materialized=incremental_where_supported(),
        unique_key='user_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns'
    )
}}

{#-
    Incremental by user: a run recomputes the histories of the users with interactions loaded
    since the last run (all of their interactions, so a late or re-delivered event lands in its
    place), and delete+insert replaces exactly those users' rows. loaded_through is the newest
    interaction load the run saw; the table's largest is the watermark. A table from before the
    column (or a full refresh) has no watermark: every user is recomputed.
-#}

{% set watermarked = has_watermark('loaded_through') %}

with interactions as {{ not_materialized() }} (

    select * from {{ ref('interactions') }}

),

{% if watermarked %}
changed_users as (

    select distinct user_id
    from interactions
    where
        -- A mart built before any interaction has no watermark yet: every load is new.
        loaded_at > (
            select coalesce(max(loaded_through), timestamp '1970-01-01') from {{ this }}
        )

),
{% endif %}

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
    {% if watermarked %}
        and user_id in (select user_id from changed_users)
    {% endif %}

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
        event_id,
        (select max(loaded_at) from interactions) as loaded_through
    from interactions_by_recency
    where recency_rank <= {{ var('history_length') }}

)

select * from recent_history
