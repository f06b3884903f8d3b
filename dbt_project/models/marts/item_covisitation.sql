{{
    config(
        materialized='incremental',
        unique_key='pair_date',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook="delete from {{ this }} where item_id is null"
    )
}}

{#-
    Items that follow or accompany each other in users' positive events, per day of the later event.
    Each event pairs with the user's next covisitation_window_events events that fall within
    covisitation_window_hours after it (items differing): earlier -> later weighs 1,
    later -> earlier weighs covisitation_backward_weight.

    Incremental on load time, replacing whole pair dates: every pair a changed event makes, breaks
    or pushes out of the window ends within covisitation_window_hours after it, on a day one of
    its user's events falls on. Those dates are recomputed from all interactions and replace their
    old rows, so an incremental run and a --full-refresh give the same table. An affected date left
    without pairs still needs its old rows deleted: a marker row with a null item_id carries the
    date into delete+insert, and the post-hook removes it.
-#}

-- depends_on: {{ ref('stg_raw__events') }}

{%- set window_events = var('covisitation_window_events') -%}
{%- set window_hours = var('covisitation_window_hours') -%}
{%- set backward_weight = var('covisitation_backward_weight') %}

with interactions as (

    select * from {{ ref('interactions') }}

),

{% if is_incremental() %}

    new_interactions as (

        select
            event_id,
            user_id,
            occurred_at
        from interactions
        where
            loaded_at > (
                select coalesce(max(already_seen.max_loaded_at), timestamp '1970-01-01')
                from {{ this }} as already_seen
            )

    ),

    changed_events as (

        -- A re-delivery replaces its event's row in interactions: the user and time the event
        -- had before (whose pairs are now stale) are only in staging, which keeps every delivery.
        select
            new_interactions.user_id,
            new_interactions.occurred_at
        from new_interactions
        union
        select
            deliveries.user_id,
            deliveries.occurred_at
        from {{ ref('stg_raw__events') }} as deliveries
        inner join new_interactions
            on deliveries.event_id = new_interactions.event_id

    ),

    affected_dates as (

        select cast(changed_events.occurred_at as date) as pair_date
        from changed_events
        union
        select cast(later_events.occurred_at as date) as pair_date
        from changed_events
        inner join interactions as later_events
            on
                changed_events.user_id = later_events.user_id
                and changed_events.occurred_at <= later_events.occurred_at
                and later_events.occurred_at
                <= {{ dbt.dateadd('hour', window_hours, 'changed_events.occurred_at') }}
        where later_events.weight > 0

    ),

    positive_interactions as (

        -- The events a pair ending on an affected date can involve, and every event between them.
        select
            interactions.event_id,
            interactions.user_id,
            interactions.item_id,
            interactions.occurred_at,
            interactions.loaded_at
        from interactions
        where
            interactions.weight > 0
            and exists (
                select 1 as affected
                from affected_dates
                where
                    interactions.occurred_at >= {{ dbt.dateadd(
                        'hour',
                        '-' ~ window_hours,
                        'cast(affected_dates.pair_date as timestamp)'
                    ) }}
                    and interactions.occurred_at < {{ dbt.dateadd(
                        'day', 1, 'cast(affected_dates.pair_date as timestamp)'
                    ) }}
            )

    ),

{% else %}

    positive_interactions as (

        select
            event_id,
            user_id,
            item_id,
            occurred_at,
            loaded_at
        from interactions
        where weight > 0

    ),

{% endif %}

events_in_order as (

    select
        user_id,
        item_id,
        occurred_at,
        loaded_at,
        row_number() over (
            partition by user_id
            order by occurred_at asc, event_id asc
        ) as event_position
    from positive_interactions

),

event_pairs as (

    select
        earlier_events.item_id as earlier_item_id,
        later_events.item_id as later_item_id,
        cast(later_events.occurred_at as date) as pair_date,
        greatest(earlier_events.loaded_at, later_events.loaded_at) as loaded_at
    from events_in_order as earlier_events
    inner join events_in_order as later_events
        on
            earlier_events.user_id = later_events.user_id
            and earlier_events.event_position < later_events.event_position
            and later_events.event_position <= earlier_events.event_position + {{ window_events }}
            and later_events.occurred_at
            <= {{ dbt.dateadd('hour', window_hours, 'earlier_events.occurred_at') }}
            and earlier_events.item_id != later_events.item_id
    {% if is_incremental() %}
        -- Pairs ending on other dates may lack earlier events here: those dates keep their rows.
        where
            cast(later_events.occurred_at as date) in (
                select affected_dates.pair_date from affected_dates
            )
    {% endif %}

),

directed_pairs as (

    select
        earlier_item_id as item_id,
        later_item_id as related_item_id,
        pair_date,
        cast(1 as double) as pair_weight,
        loaded_at
    from event_pairs
    union all
    select
        later_item_id as item_id,
        earlier_item_id as related_item_id,
        pair_date,
        cast({{ backward_weight }} as double) as pair_weight,
        loaded_at
    from event_pairs

),

daily_pairs as (

    select
        cast(item_id as {{ dbt.type_string() }}) as item_id,
        cast(related_item_id as {{ dbt.type_string() }}) as related_item_id,
        pair_date,
        sum(pair_weight) as pair_weight,
        -- The newest load among the day's pairs: the next run's watermark.
        max(loaded_at) as max_loaded_at
    from directed_pairs
    group by item_id, related_item_id, pair_date

),

{% if is_incremental() %}

    dates_left_without_pairs as (

        select
            cast(null as {{ dbt.type_string() }}) as item_id,
            cast(null as {{ dbt.type_string() }}) as related_item_id,
            affected_dates.pair_date,
            cast(null as double) as pair_weight,
            cast(null as {{ dbt.type_timestamp() }}) as max_loaded_at
        from affected_dates
        where affected_dates.pair_date not in (select daily_pairs.pair_date from daily_pairs)

    ),

{% endif %}

pair_dates_replaced as (

    select * from daily_pairs
    {% if is_incremental() %}
        union all
        select * from dates_left_without_pairs
    {% endif %}

)

select * from pair_dates_replaced
