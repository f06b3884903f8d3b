{#
    Use a model's custom schema exactly as written (staging, intermediate, marts), not dbt's default
    `<target schema>_<custom schema>`: the other parts of freshrank read these tables by those names.
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
