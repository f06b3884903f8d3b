{#
    Fails on every combination of the given columns that occurs more than once
    (a composite key), e.g. (user_id, recency_rank).
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set column_list = combination_of_columns | join(', ') %}

    with combinations as (

        select
            {{ column_list }},
            count(*) as occurrences
        from {{ model }}
        group by {{ column_list }}

    )

    select *
    from combinations
    where occurrences > 1

{% endtest %}
