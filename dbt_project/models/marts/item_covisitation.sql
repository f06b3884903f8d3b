{{
    config(
        materialized=incremental_where_supported(),
        unique_key='pair_date',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        post_hook="{% if is_incremental() %}delete from {{ this }} where item_id is null{% endif %}"
    )
}}

{#-
    Items that follow or accompany each other in users' positive events, per day of the later event.
    Each event pairs with the user's next covisitation_window_events events that fall within
    covisitation_window_hours after it (items differing): earlier -> later weighs 1,
    later -> earlier weighs covisitation_backward_weight.

    Incremental on load time, replacing whole pair dates: every pair a changed event makes, breaks
    or pushes out of the window ends within covisitation_window_hours after it, so it falls on the
    event's day or one of the next few. Those dates are recomputed from all interactions and replace their
    old rows, so an incremental run and a --full-refresh give the same table. An affected date left
    without pairs still needs its old rows deleted: a marker row with a null item_id carries the
    date into delete+insert, and the post-hook removes it.
-#}

-- depends_on: {{ ref('stg_raw__events') }}

{%- set window_events = var('covisitation_window_events') | int -%}
{%- set window_hours = var('covisitation_window_hours') | int -%}
{%- set backward_weight = var('covisitation_backward_weight') -%}
{%- if window_events < 1 or window_hours < 0 -%}
    {{ exceptions.raise_compiler_error(
        'item_covisitation needs covisitation_window_events >= 1 and covisitation_window_hours'
        ~ ' >= 0; got ' ~ window_events ~ ' and ' ~ window_hours
    ) }}
{%- endif %}

with interactions as {{ not_materialized() }} (

    select * from {{ ref('interactions') }}

),

{% if is_incremental() %}

    new_interactions as (

        select
            event_id,
            occurred_at
        from interactions
        where {{ loaded_after_watermark('max_loaded_at') }}

    ),

    changed_events as (

        -- A re-delivery replaces its event's row in interactions: the time the event had before
        -- (whose pairs are now stale) is only in staging, which keeps every delivery.
        select new_interactions.occurred_at
        from new_interactions
        union
        select deliveries.occurred_at
        from {{ ref('stg_raw__events') }} as deliveries
        inner join new_interactions
            on deliveries.event_id = new_interactions.event_id

    ),

    day_steps as (

        -- 0 up to the most days the window can reach past its first day.
        select series.generated_number - 1 as day_offset
        from ({{ dbt.generate_series(window_hours // 24 + 2) }}) as series

    ),

    affected_dates as (

        -- Every day from the changed event's to the one window_hours after it.
        select distinct
            cast(
                {{ dbt.dateadd(
                    'day', 'day_steps.day_offset', 'cast(changed_events.occurred_at as date)'
                ) }} as date
            ) as pair_date
        from changed_events
        cross join day_steps
        where
            {{ dbt.dateadd(
                'day', 'day_steps.day_offset', 'cast(changed_events.occurred_at as date)'
            ) }}
            <= {{ dbt.dateadd('hour', window_hours, 'changed_events.occurred_at') }}

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
            -- The span of every affected window first: a range check per row, where the exists
            -- below alone costs a join of every distinct event time with the affected dates.
            and interactions.occurred_at >= (
                select min({{ dbt.dateadd(
                    'hour', '-' ~ window_hours, 'cast(affected_dates.pair_date as timestamp)'
                ) }})
                from affected_dates
            )
            and interactions.occurred_at < (
                select max({{ dbt.dateadd(
                    'day', 1, 'cast(affected_dates.pair_date as timestamp)'
                ) }})
                from affected_dates
            )
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

window_steps as (

    select series.generated_number as position_step
    from ({{ dbt.generate_series(window_events) }}) as series

),

pair_candidates as (

    -- Each event with the positions of its next window_events events: an equi-join below, which
    -- stays linear in a user's events where a range join on positions grows with their square.
    select
        events_in_order.user_id,
        events_in_order.item_id,
        events_in_order.occurred_at,
        events_in_order.loaded_at,
        events_in_order.event_position + window_steps.position_step as later_position
    from events_in_order
    cross join window_steps

),

event_pairs as (

    select
        earlier_events.item_id as earlier_item_id,
        later_events.item_id as later_item_id,
        cast(later_events.occurred_at as date) as pair_date,
        greatest(earlier_events.loaded_at, later_events.loaded_at) as loaded_at
    from pair_candidates as earlier_events
    inner join events_in_order as later_events
        on
            earlier_events.user_id = later_events.user_id
            and earlier_events.later_position = later_events.event_position
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
        {{ fixed_decimals('sum(pair_weight)') }} as pair_weight,
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
