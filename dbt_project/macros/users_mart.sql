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
