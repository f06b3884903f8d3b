from __future__ import annotations

import pytest
from click.testing import CliRunner

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.app.cli import main
from orchestration.experiments.commands import resolve_versions
from orchestration.settings import Settings


def test_a_bad_variant_spec_is_refused_before_anything_is_recorded(settings: Settings) -> None:
    result = CliRunner().invoke(
        main, ["experiment", "start", "ab", "--variant", "champion=half", "--variant", "b=0.5"]
    )
    assert result.exit_code == 1
    assert "share 'half' is not a number" in result.output
    assert "no experiments yet" in CliRunner().invoke(main, ["experiment", "status"]).output


def test_unknown_versions_and_aliases_are_named(settings: Settings) -> None:
    with pytest.raises(
        ValueError, match="no version of freshrank-ranking has the alias 'champion'"
    ):
        resolve_versions(
            settings,
            ExperimentDesign("ab", (Variant("a", 0.5, "champion"), Variant("b", 0.5, "7"))),
        )
    with pytest.raises(ValueError, match="variant 'b': freshrank-ranking has no version 7"):
        resolve_versions(
            settings,
            ExperimentDesign("ab", (Variant("b", 0.5, "7"), Variant("c", 0.5, "8"))),
        )
