"""Stand-ins for dbt's cross-database macros (`dbt.dateadd`, `dbt.type_string`, ...) for sqlfluff.

sqlfluff's jinja templater lints without dbt, so it knows no `dbt` namespace; these render what
dbt-duckdb renders, which is all the linter needs. dbt itself never reads this folder.
"""

from types import SimpleNamespace


def _dateadd(datepart: str, interval: object, from_date_or_timestamp: str) -> str:
    return f"({from_date_or_timestamp} + cast({interval} as bigint) * interval 1 {datepart})"


dbt = SimpleNamespace(
    dateadd=_dateadd,
    type_string=lambda: "varchar",
    type_timestamp=lambda: "timestamp",
    type_int=lambda: "integer",
    type_bigint=lambda: "bigint",
)
