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
    -- Read under the same `watermarked` condition below (sqlfluff lints each branch apart).
    changed_users as (  -- noqa: ST03

        select distinct user_id
        from interactions
        where {{ loaded_after_watermark('loaded_through') }}

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
    {% if watermarked %}
        where weight > 0 and user_id in (select changed_users.user_id from changed_users)
    {% else %}
        where weight > 0
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
        (select max(seen.loaded_at) from interactions as seen) as loaded_through
    from interactions_by_recency
    where recency_rank <= {{ var('history_length') }}

)

select * from recent_history
