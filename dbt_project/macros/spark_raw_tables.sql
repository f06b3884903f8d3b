{#
    The raw tables as the spark target reads them: Parquet exported from the DuckDB warehouse's
    raw schema (orchestration/warehouse/spark.py) under FRESHRANK_SPARK_DIR/raw/<table>. Run at
    the start of every dbt invocation, so each build sees the newest export; other warehouses
    read their raw schema directly and do nothing here.
#}
{% macro register_raw_tables() -%}
    {{ return(adapter.dispatch('register_raw_tables')()) }}
{%- endmacro %}

{% macro default__register_raw_tables() -%}
{%- endmacro %}

{% macro spark__register_raw_tables() -%}
    {%- if execute -%}
        {%- set raw_dir = env_var('FRESHRANK_SPARK_DIR') ~ '/raw' -%}
        {%- do run_query('create database if not exists raw') -%}
        {%- for table in ['events', 'items'] -%}
            {%- do run_query('drop table if exists raw.' ~ table) -%}
            {%- do run_query(
                'create table raw.' ~ table ~ " using parquet location '" ~ raw_dir ~ '/' ~ table ~ "'"
            ) -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
