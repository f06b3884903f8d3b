{#-
    One global cutoff in event time, so validation is strictly the future of training for every
    user (no leakage through other users' later events). Interactions at the cutoff train.
-#}

with interactions as (

    select * from {{ ref('interactions') }}

),

split_cutoff as (

    select
        quantile_disc(
            occurred_at, 1 - {{ var('validation_fraction') }}
        ) as cutoff_at
    from interactions

),

interactions_split as (

    select
        interactions.event_id,
        interactions.user_id,
        interactions.item_id,
        interactions.occurred_at,
        interactions.weight,
        case
            when interactions.occurred_at <= split_cutoff.cutoff_at then 'train'
            else 'validation'
        end as split,
        split_cutoff.cutoff_at
    from interactions
    cross join split_cutoff

)

select * from interactions_split
