{#
    What differs between the warehouses freshrank's models run on (DuckDB by default, Spark by
    FRESHRANK_DBT_TARGET=spark): dispatched by adapter, DuckDB's behaviour is the default.
#}

{# Seconds since 1970 of a timestamp, with its fraction, as a double (1e6 is one in Spark). #}
{% macro epoch_seconds(timestamp_expression) -%}
    {{ return(adapter.dispatch('epoch_seconds')(timestamp_expression)) }}
{%- endmacro %}

{% macro default__epoch_seconds(timestamp_expression) -%}
    epoch({{ timestamp_expression }})
{%- endmacro %}

{% macro spark__epoch_seconds(timestamp_expression) -%}
    (unix_micros({{ timestamp_expression }}) / 1e6)
{%- endmacro %}

{#
    How a mart that is incremental on DuckDB materialises here. Its incremental runs replace rows
    by key (delete+insert), which Spark's Parquet tables cannot do (merge needs Delta or Iceberg):
    on Spark such a mart is rebuilt in full, which gives the same rows.
#}
{% macro incremental_where_supported() -%}
    {{ return(adapter.dispatch('incremental_where_supported')()) }}
{%- endmacro %}

{% macro default__incremental_where_supported() -%}
    {{ return('incremental') }}
{%- endmacro %}

{% macro spark__incremental_where_supported() -%}
    {{ return('table') }}
{%- endmacro %}
