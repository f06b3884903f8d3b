{#
    What the events models compute, as macros over any relation or CTE of staged events, so that a
    full build (the intermediate views over every raw event) and the incremental interactions mart
    (over only the rows loaded since its last run) share one definition.
#}

{#- One row per event_id: the copy from the latest load (loaded_at, then source_row; source_file
    only breaks exact ties), so an event delivered twice counts once. -#}
{% macro latest_deliveries(staged_events) -%}
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
    from (
        select
            *,
            row_number() over (
                partition by event_id
                order by loaded_at desc, source_row desc, source_file desc
            ) as delivery_rank
        from {{ staged_events }}
    ) as deliveries_ranked
    where delivery_rank = 1
{%- endmacro %}

{#- Deduplicated events with their interaction weight (interaction_weight). -#}
{% macro weighted_events(events) -%}
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
    from {{ events }}
{%- endmacro %}
