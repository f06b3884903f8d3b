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

{#
    A float measure as a mart publishes it: rounded to a fixed number of decimal places, so the
    same rows give the same value on every engine. Engines differ in the last bits of exp and ln
    and in the order a sum adds its rows (which changes with partitions and threads); rounded,
    those differences of about 1e-15 vanish (except, rarely, a value on a rounding boundary),
    and no rank or tie-break downstream depends on them. Nine places keep every real difference
    between measures of event weights.
#}
{% macro fixed_decimals(expression, decimals=9) -%}
    round({{ expression }}, {{ decimals }})
{%- endmacro %}

{#
    Placed after `as` in a CTE that a model reads more than once, so that DuckDB reads the
    relation where it is used rather than copying it whole first: DuckDB materialises such a
    CTE, and copying ten million interactions cost a refresh's co-visitation query 0.5 of its
    1.6 s. Spark has no such clause.
#}
{% macro not_materialized() -%}
    {{ return(adapter.dispatch('not_materialized')()) }}
{%- endmacro %}

{% macro default__not_materialized() -%}
    not materialized
{%- endmacro %}

{% macro spark__not_materialized() -%}
{%- endmacro %}
