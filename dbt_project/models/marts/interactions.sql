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
    An incremental run deduplicates and weighs only the rows loaded since the last run (any
    re-delivery among them is the event's latest copy, and delete+insert replaces the older one):
    the same definitions as the intermediate views (macros/event_deliveries.sql), without numbering
    every raw event again.
-#}

with new_deliveries as (

    select * from {{ ref('stg_raw__events') }}
    {% if is_incremental() %}
        where {{ loaded_after_watermark('loaded_at') }}
    {% endif %}

),

new_events as (

    {{ latest_deliveries('new_deliveries') }}

),

new_interactions as (

    {{ weighted_events('new_events') }}

)

select * from new_interactions
