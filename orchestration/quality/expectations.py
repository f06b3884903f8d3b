"""Great Expectations 1.x suites over the marts, run on DataFrames with every full build (see
STACK.md: no dagster-ge, no SQL source). Each raw batch's checks run in DuckDB instead
(batch_checks.py): a batch's path to published lists cannot wait for this import.

`great_expectations` takes seconds to import, so `_gx()` imports it when a suite first runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.constants import (
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    OCCURRED_AT,
    TITLE,
    WEIGHT,
)


def _gx() -> Any:
    """The great_expectations module, imported without Spark Connect.

    GX's import probes `pyspark.sql.connect` when pyspark is installed (the `distributed` extra).
    pyspark 4's connect package checks its own dependencies on import and calls sys.exit(0) when
    the main module has no file (`python -c`, some worker processes) and they are missing: the
    run would end quietly in the middle of a check. freshrank validates pandas frames only, so
    the probe is answered "not installed" for the length of the import.
    """
    if "great_expectations" in sys.modules:
        return sys.modules["great_expectations"]
    blocked = "pyspark.sql.connect" not in sys.modules
    if blocked:
        sys.modules["pyspark.sql.connect"] = None  # an import of it raises ImportError
    try:
        import great_expectations
    finally:
        if blocked:
            del sys.modules["pyspark.sql.connect"]
    _skip_batch_fingerprints()
    return great_expectations


def _skip_batch_fingerprints() -> None:
    """GX marks every pandas batch with a fingerprint, an md5 over every row hashed, for frames
    under its HASH_THRESHOLD bytes (counted shallow: ten million interactions count 320 MB).
    freshrank never reads that marker, and at ten million rows computing it was two thirds of
    the interactions suite (72 s; 18.5 s without it): no frame is fingerprinted."""
    from great_expectations.execution_engine import pandas_execution_engine

    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0


@dataclass(frozen=True)
class SuiteOutcome:
    """What a suite found: success, counts, and one line per failed expectation."""

    suite: str
    success: bool
    evaluated: int
    failures: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "expectations_evaluated": self.evaluated,
            "expectations_failed": len(self.failures),
            "failures": "; ".join(self.failures) or "none",
        }


def _interaction_expectations(event_types: Sequence[str]) -> list[Any]:
    gx = _gx()

    return [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
        gx.expectations.ExpectColumnValuesToBeUnique(column=EVENT_ID),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=WEIGHT),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=OCCURRED_AT),
        gx.expectations.ExpectColumnValuesToBeInSet(column=EVENT_TYPE, value_set=list(event_types)),
    ]


def _catalog_expectations() -> list[Any]:
    gx = _gx()

    return [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
        gx.expectations.ExpectColumnValuesToBeUnique(column=ITEM_ID),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=TITLE),
    ]


SUITES: dict[str, Callable[..., list[Any]]] = {
    "interactions": _interaction_expectations,
    "items": _catalog_expectations,
}


def validate_frame(frame: pd.DataFrame, suite_name: str, expectations: list[Any]) -> SuiteOutcome:
    """Validate a whole DataFrame against a list of expectations in an ephemeral GX context."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas(f"{suite_name}_source")
    batch_definition = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe(
        "whole_frame"
    )
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)
    failures = []
    for expectation_result in result.results:
        if not expectation_result.success:
            config = expectation_result.expectation_config
            column = config.kwargs.get("column", "table")
            failures.append(f"{config.type} on {column}{_found(expectation_result.result)}")
    return SuiteOutcome(
        suite=suite_name,
        success=bool(result.success),
        evaluated=int(result.statistics["evaluated_expectations"]),
        failures=failures,
    )


def run_suite(frame: pd.DataFrame, suite_name: str, **suite_arguments: Any) -> SuiteOutcome:
    """Validate ``frame`` with one of the named suites in ``SUITES``."""
    return validate_frame(frame, suite_name, SUITES[suite_name](**suite_arguments))


def _found(result: dict[str, Any]) -> str:
    """What a failed expectation found, for its line: how many values broke it, or the value
    it observed (an empty table's row count, say)."""
    unexpected = result.get("unexpected_count")
    if unexpected is not None:
        return f" ({unexpected} unexpected)"
    observed = result.get("observed_value")
    return f" (observed {observed})" if observed is not None else ""
