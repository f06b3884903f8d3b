"""The data contract's checks on each raw batch a run loads, as one DuckDB query per batch.

Every loaded row already passed the contract's row rules on its way in (ingest/rules.py); these
checks read back what the run wrote to ``raw.<table>`` and test it again, independently of the
loader, so a loader bug cannot pass bad rows on quietly. They are the raw suites' expectations
(not null, in the configured event types, non-empty ids and titles), named as Great Expectations
names them, evaluated inside DuckDB over the batch's rows.

Great Expectations itself runs the suites over the whole marts with every full build
(quality/checks.py). It is not started here: its import alone takes about 2.4 s, and a batch's
checks sit on the path from a landed file to published lists that must take seconds (`freshrank
ingest` then `freshrank refresh`). A check here costs one scan of the batch's rows.

(No `from __future__ import annotations` here: Dagster reads the checks' context annotations.)
"""

from collections.abc import Sequence
from dataclasses import dataclass

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    ResourceParam,
    asset_check,
)

from ml.constants import EVENT_ID, EVENT_TYPE, ITEM_ID, OCCURRED_AT, TITLE, USER_ID
from orchestration.ingest.assets import raw_events, raw_items
from orchestration.ingest.rules import identifier, literal
from orchestration.quality.expectations import SuiteOutcome
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

NOT_NULL = "expect_column_values_to_not_be_null"
IN_SET = "expect_column_values_to_be_in_set"
NOT_EMPTY = "expect_column_value_lengths_to_be_between"


@dataclass(frozen=True)
class BatchRule:
    """One expectation on a column: a row breaks it where ``unexpected`` (SQL) is true. As in
    Great Expectations, a NULL is unexpected only to the not-null rule."""

    expectation: str
    column: str
    unexpected: str

    @classmethod
    def not_null(cls, column: str) -> "BatchRule":
        return cls(NOT_NULL, column, f"{identifier(column)} is null")

    @classmethod
    def in_set(cls, column: str, values: Sequence[str]) -> "BatchRule":
        listed = ", ".join(literal(value) for value in values)
        return cls(IN_SET, column, f"{identifier(column)} not in ({listed})")

    @classmethod
    def not_empty(cls, column: str) -> "BatchRule":
        return cls(NOT_EMPTY, column, f"length({identifier(column)}) < 1")


def raw_event_rules(event_types: Sequence[str]) -> list[BatchRule]:
    return [
        *(BatchRule.not_null(column) for column in (EVENT_ID, USER_ID, ITEM_ID, EVENT_TYPE)),
        BatchRule.not_null(OCCURRED_AT),
        BatchRule.in_set(EVENT_TYPE, event_types),
        BatchRule.not_empty(USER_ID),
        BatchRule.not_empty(ITEM_ID),
    ]


RAW_ITEM_RULES = [
    BatchRule.not_null(ITEM_ID),
    BatchRule.not_null(TITLE),
    BatchRule.not_empty(TITLE),
]


def check_batch(
    connection, table: str, batch_id: str, rules: Sequence[BatchRule]
) -> tuple[int, SuiteOutcome]:
    """(rows in the batch, what the rules found) for ``table``'s rows of ``batch_id``."""
    counts = ", ".join(f"count(*) filter (where {rule.unexpected})" for rule in rules)
    row = connection.execute(
        f"select count(*), {counts} from {table} where batch_id = ?", [batch_id]
    ).fetchone()
    rows, unexpected = int(row[0]), [int(count) for count in row[1:]]
    failures = [
        f"{rule.expectation} on {rule.column} ({count} unexpected)"
        for rule, count in zip(rules, unexpected, strict=True)
        if count
    ]
    outcome = SuiteOutcome(
        suite=table.replace(".", "_"), success=not failures, evaluated=len(rules), failures=failures
    )
    return rows, outcome


def suite_result(
    outcome: SuiteOutcome, rows: int, severity: AssetCheckSeverity
) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.success,
        severity=severity,
        metadata={"rows_validated": rows, **outcome.metadata()},
    )


def _checked(
    settings: Settings, table: str, run_id: str, rules: Sequence[BatchRule]
) -> AssetCheckResult:
    """The rules on the rows this run loaded into ``table`` (its batch_id is the run id)."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        rows, outcome = check_batch(connection, table, run_id, rules)
    if not rows:
        # No new file of this kind in this run: nothing to validate.
        return AssetCheckResult(passed=True, metadata={"rows_validated": 0})
    return suite_result(outcome, rows, AssetCheckSeverity.ERROR)


@asset_check(
    asset=raw_events, description="The batch of raw events this run loaded meets the data contract."
)
def check_raw_events_batch(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    rules = raw_event_rules(settings.event_types)
    return _checked(settings, "raw.events", context.run.run_id, rules)


@asset_check(asset=raw_items, description="The catalog rows this run loaded have ids and titles.")
def check_raw_items_batch(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    return _checked(settings, "raw.items", context.run.run_id, RAW_ITEM_RULES)


batch_checks = [check_raw_events_batch, check_raw_items_batch]
