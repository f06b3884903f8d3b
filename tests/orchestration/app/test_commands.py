"""Commands run before there is anything to work on say what to do first."""

from __future__ import annotations

from click.testing import CliRunner

from orchestration.app.cli import main
from orchestration.settings import Settings


def test_retrain_before_any_build_says_to_build_first(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["retrain"])
    assert result.exit_code == 1
    assert "nothing is built yet: run `freshrank build` first" in result.output


def test_promoting_a_version_that_does_not_exist_names_the_versions(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["promote", "999"])
    assert result.exit_code == 1
    assert "has no version '999' (versions: none yet" in result.output
    assert "Traceback" not in result.output
