"""What sqlfluff's jinja templater needs to render the models the way dbt does, without dbt.

`var` returns dbt_project.yml's defaults (sqlfluff's own stand-in returns a placeholder string
that jinja arithmetic fails on), and `dbt` holds stand-ins for the cross-database macros the
models call, rendering what dbt-duckdb renders. dbt itself never reads this folder.
"""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

_PROJECT_VARS: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parent.parent / "dbt_project.yml").read_text()
)["vars"]


def var(name: str, default: Any = None) -> Any:
    return _PROJECT_VARS.get(name, default)


def _dateadd(datepart: str, interval: object, from_date_or_timestamp: str) -> str:
    return f"({from_date_or_timestamp} + cast({interval} as bigint) * interval 1 {datepart})"


def _generate_series(upper_bound: int) -> str:
    return f"select generate_series as generated_number from generate_series(1, {upper_bound})"


dbt = SimpleNamespace(
    dateadd=_dateadd,
    generate_series=_generate_series,
    type_string=lambda: "varchar",
    type_timestamp=lambda: "timestamp",
    type_int=lambda: "integer",
    type_bigint=lambda: "bigint",
)


# What macros/portability.sql and macros/spark_raw_tables.sql dispatch to on DuckDB.
_DUCKDB_IMPLEMENTATIONS = {
    "epoch_seconds": lambda timestamp_expression: f"epoch({timestamp_expression})",
    "incremental_where_supported": lambda: "incremental",
    "register_raw_tables": lambda: "",
    "not_materialized": lambda: "not materialized",
}
# The incremental marts' existing table, as macros/incremental_by_user.sql asks after it: no
# columns, as for a table not built yet.
adapter = SimpleNamespace(
    dispatch=lambda name, *_: _DUCKDB_IMPLEMENTATIONS[name],
    get_columns_in_relation=lambda _relation: [],
)
