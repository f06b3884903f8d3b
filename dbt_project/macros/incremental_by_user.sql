{#
    The marts kept incrementally by user (users, user_recent_history) recompute only some users
    each run, and find them from a watermark column: the newest interaction load a run saw.
#}

{#- Whether this run updates the existing table from its watermark ``column``: an incremental
    run on a table that has it (a table from before the column is recomputed whole once). -#}
{% macro has_watermark(column) -%}
    {{ return(is_incremental() and (
        column in (adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list)
    )) }}
{%- endmacro %}

{#
    The post-hook of the incremental users mart: remove the rows of users with no interaction
    left (retention deleted them all): every event of theirs is older than the oldest one left,
    or none is left at all. Nothing to do when the mart was built whole (or is a table).
#}
{% macro remove_users_without_events() -%}
    {%- if is_incremental() -%}
        delete from {{ this }}
        where last_event_at < coalesce(
            (select min(occurred_at) from {{ ref('interactions') }}), timestamp 'infinity'
        )
    {%- else -%}
        select 1
    {%- endif -%}
{%- endmacro %}
