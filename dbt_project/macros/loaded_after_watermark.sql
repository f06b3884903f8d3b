{#
    The condition every incremental mart selects its new rows by: loaded after the newest load
    the table already built has seen (its watermark ``column``). A table built before anything
    was loaded has no watermark yet, and every load is new.
#}
{% macro loaded_after_watermark(column) -%}
    loaded_at > (
        select coalesce(max(already_built.{{ column }}), timestamp '1970-01-01')
        from {{ this }} as already_built
    )
{%- endmacro %}
