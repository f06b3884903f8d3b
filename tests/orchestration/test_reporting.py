"""report_run: one job run in this process, on the deployment's instance."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from orchestration.ingest.job import INGEST_JOB
from orchestration.instance import prepare_dagster_home
from orchestration.reporting import report_run
from orchestration.settings import Settings


def test_runs_are_recorded_on_the_open_instance_it_is_given(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm refresher passes the instance it keeps open: no run opens another."""
    prepare_dagster_home(settings)
    with DagsterInstance.get() as instance:

        def reopened(*_args, **_kwargs) -> DagsterInstance:
            raise AssertionError("report_run opened the instance again")

        monkeypatch.setattr(DagsterInstance, "get", reopened)
        assert report_run(INGEST_JOB, settings, instance)
        assert report_run(INGEST_JOB, settings, instance)
        runs = instance.get_runs()
    assert [run.job_name for run in runs] == [INGEST_JOB, INGEST_JOB]
    assert all(run.is_success for run in runs)
