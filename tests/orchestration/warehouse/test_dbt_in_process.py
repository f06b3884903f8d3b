"""dbt in this process (the default) records what a dbt process records, on a real warehouse."""

from __future__ import annotations

import pytest
from dagster import AssetSelection

from ml.datasets import movielens_sample
from orchestration.ingest.commands import ingest_files
from orchestration.instance import open_instance
from orchestration.settings import Settings

pytestmark = pytest.mark.slow


def _dbt_outcome(settings: Settings) -> tuple[set[str], set[tuple[str, str, bool, str]]]:
    """(assets materialized, (asset, check, passed, severity) evaluated) by one dbt build."""
    from orchestration.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    with open_instance(settings) as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=list(
                AssetSelection.groups("warehouse").resolve(defs.resolve_asset_graph())
            ),
            raise_on_error=False,
        )
    assert result.success
    materialized = {
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    }
    checks = {
        (
            evaluation.asset_key.to_user_string(),
            evaluation.check_name,
            evaluation.passed,
            evaluation.severity.value,
        )
        for evaluation in result.get_asset_check_evaluations()
    }
    return materialized, checks


def test_in_process_dbt_records_the_assets_and_checks_of_a_dbt_process(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items, events = movielens_sample()
    few = events.head(300)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # Half the items: the relationships tests then warn, as on a catalog that lags behind.
    kept = few["item_id"].drop_duplicates().iloc[::2]
    items[items["item_id"].isin(kept)].to_csv(inputs / "items.csv", index=False)
    few.to_csv(inputs / "events.csv", index=False)
    ingest_files(settings, {"items": [inputs / "items.csv"], "events": [inputs / "events.csv"]})

    monkeypatch.setenv("FRESHRANK_DBT_IN_PROCESS", "0")
    in_a_process = _dbt_outcome(settings)
    monkeypatch.setenv("FRESHRANK_DBT_IN_PROCESS", "1")
    in_process = _dbt_outcome(settings)

    assert in_process == in_a_process
    materialized, checks = in_process
    assert "marts/interactions" in materialized and "marts/item_covisitation" in materialized
    assert any(not passed and severity == "WARN" for _, _, passed, severity in checks)
    assert sum(passed for _, _, passed, _ in checks) >= 40  # the not-null, unique... tests ran


def _dbt_log(settings: Settings, selection: AssetSelection) -> str:
    """The dbt log of one run of ``selection`` (the warehouse's models, with or without their
    dbt tests)."""
    from dagster import Definitions, define_asset_job

    from orchestration.definitions import defs

    job = Definitions.merge(
        defs, Definitions(jobs=[define_asset_job("dbt_only", selection=selection)])
    ).resolve_job_def("dbt_only")
    with open_instance(settings) as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    return (settings.home / "logs" / f"dbt-{result.run_id}.log").read_text()


def test_a_run_without_the_dbt_tests_leaves_out_the_unit_tests_of_the_sql_too(
    settings: Settings, tmp_path
) -> None:
    from orchestration.jobs import REFRESH_WAREHOUSE

    items, events = movielens_sample()
    few = events.head(300)
    items[items["item_id"].isin(few["item_id"])].to_csv(tmp_path / "items.csv", index=False)
    few.to_csv(tmp_path / "events.csv", index=False)
    ingest_files(settings, {"items": [tmp_path / "items.csv"], "events": [tmp_path / "events.csv"]})

    with_tests = _dbt_log(settings, AssetSelection.groups("warehouse"))
    assert "START unit_test" in with_tests  # a full build tests the SQL
    refresh = _dbt_log(settings, REFRESH_WAREHOUSE)  # what refresh_job selects of the warehouse
    assert "START sql incremental model marts.interactions" in refresh
    assert "unit_test" not in refresh


def test_two_deployments_on_one_checkout_each_start_from_their_own_dbt_parse(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt's partial parse holds the profile, which names the deployment's warehouse: a parse
    shared by the checkout would make each deployment's next run parse the whole project."""
    _, events = movielens_sample()
    events.head(300).to_csv(tmp_path / "events.csv", index=False)
    models = AssetSelection.groups("warehouse").without_checks()

    def deployment(home) -> Settings:
        monkeypatch.setenv("FRESHRANK_HOME", str(home))
        for variable in ("FRESHRANK_WAREHOUSE_PATH", "DAGSTER_HOME"):  # runs set them
            monkeypatch.delenv(variable, raising=False)
        chosen = Settings.from_env()
        chosen.ensure_dirs()
        return chosen

    logs = []
    for home in (settings.home, tmp_path / "second", settings.home):
        chosen = deployment(home)
        if len(logs) < 2:
            ingest_files(chosen, {"events": [tmp_path / "events.csv"]})
        logs.append(_dbt_log(chosen, models))
    assert "Unable to do partial parsing because profile has changed" in logs[1]
    assert "Unable to do partial parsing" not in logs[2]
    assert "START sql incremental model marts.interactions" in logs[2]


def test_a_process_parses_the_project_again_only_when_its_inputs_change(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm refresher's builds reuse one parse; an edited model or other vars parse again."""
    import shutil

    from orchestration.settings import DBT_PROJECT_DIR
    from orchestration.warehouse import dbt

    monkeypatch.setattr(dbt, "_parsed", None)
    monkeypatch.setenv("FRESHRANK_WAREHOUSE_PATH", str(settings.warehouse_path))
    project = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns(*dbt.NOT_PARSED))
    locations = dbt.dbt_locations(project, project, tmp_path / "target")
    args = ["build", "--target", "duckdb", "--vars", '{"history_length": 50}']

    first = dbt.parsed_manifest(args, locations, project)
    assert first is not None and "model.freshrank.interactions" in first.nodes
    assert dbt.parsed_manifest(args, locations, project) is first

    other_vars = ["build", "--target", "duckdb", "--vars", '{"history_length": 20}']
    assert dbt.parsed_manifest(other_vars, locations, project) is not first
    again = dbt.parsed_manifest(args, locations, project)
    model = next((project / "models").rglob("interactions.sql"))
    model.write_text(model.read_text() + "\n-- edited\n")
    assert dbt.parsed_manifest(args, locations, project) is not again
