{{
    config(
        materialized=incremental_where_supported(),
        unique_key='user_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
        post_hook="{{ remove_users_without_events() }}"
    )
}}

{#-
    Incremental by user. A run recomputes the users with interactions loaded since the last run
    (loaded_through, the newest load a run saw, is the watermark) and the users some of whose
    events are gone: retention deletes events older than its cut-off, so a stored first event
    older than any event left means fewer events now. A user with none left is removed after the
    run (remove_users_without_events). A table from before the watermark column is recomputed
    whole once.
-#}

{% set watermarked = has_watermark('loaded_through') %}

with interactions as {{ not_materialized() }} (

    select * from {{ ref('interactions') }}

),

{% if watermarked %}
    -- Read under the same `watermarked` condition below (sqlfluff lints each branch apart).
    changed_users as (  -- noqa: ST03

        select user_id
        from interactions
        where {{ loaded_after_watermark('loaded_through') }}

        union

        select user_id
        from {{ this }}
        where first_event_at < (select min(remaining.occurred_at) from interactions as remaining)

    ),
{% endif %}

user_activity as (

    select
        user_id,
        min(occurred_at) as first_event_at,
        max(occurred_at) as last_event_at,
        count(*) as event_count,
        count(distinct item_id) as item_count
    from interactions
    {% if watermarked %}
        where user_id in (select changed_users.user_id from changed_users)
    {% endif %}
    group by user_id

)

select
    *,
    (select max(seen.loaded_at) from interactions as seen) as loaded_through
from user_activity
