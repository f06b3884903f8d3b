{#
    The interaction weight of one event, built from the `event_weights` var:
    event_weights[event_type]; for `rate`, scaled by the rating (value / rating_max);
    0 for event types the var does not list, so a new type never breaks a build.
#}
{% macro interaction_weight(event_type_column, value_column) -%}
    {%- set event_weights = var('event_weights') -%}
    cast(
        case {{ event_type_column }}
    {%- for event_type in event_weights %}
        {%- set type_weight = event_weights[event_type] %}
        {%- if event_type == 'rate' %}
            {#- A rating without its value says nothing about taste: it weighs 0. #}
            when 'rate' then
                {{ type_weight }} * coalesce({{ value_column }}, 0) / {{ var('rating_max') }}
        {%- else %}
            when '{{ event_type | replace("'", "''") }}' then {{ type_weight }}
        {%- endif %}
    {%- endfor %}
            else 0
        end
        as double
    )
{%- endmacro %}
