{#-
    Windows and decay are measured back from the newest event seen, never from the wall clock,
    so replays and backfills rank the same way live traffic would.
-#}

{%- set short_window_days = var('trending_short_window_days') -%}
{%- set long_window_days = var('trending_long_window_days') -%}
{%- set half_life_days = var('trending_half_life_days') -%}

with interactions as {{ not_materialized() }} (

    select * from {{ ref('interactions') }}

),

newest_event as (

    select max(occurred_at) as as_of
    from interactions

),

interactions_aged as (

    select
        interactions.item_id,
        interactions.weight,
        newest_event.as_of,
        (
            {{ epoch_seconds('newest_event.as_of') }}
            - {{ epoch_seconds('interactions.occurred_at') }}
        ) / 86400.0 as age_days
    from interactions
    cross join newest_event

),

item_scores as (

    select
        item_id,
        as_of,
        count(*) filter (
            where weight > 0 and age_days < {{ short_window_days }}
        ) as short_window_events,
        count(*) filter (
            where weight > 0 and age_days < {{ long_window_days }}
        ) as long_window_events,
        -- Dislikes do not cool an item down here: only positive interest decays into the score.
        {{ fixed_decimals(
            'sum(greatest(weight, 0) * exp(-ln(2) * age_days / ' ~ half_life_days ~ '))'
        ) }} as decayed_score
    from interactions_aged
    group by item_id, as_of

),

items_ranked as (

    select
        item_id,
        as_of,
        short_window_events,
        long_window_events,
        decayed_score,
        row_number() over (order by decayed_score desc, item_id asc) as trending_rank
    from item_scores

)

select * from items_ranked
