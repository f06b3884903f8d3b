"""report_run: one job run in this process, on the deployment's instance."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance

from orchestration.app.reporting import published_line, report_run
from orchestration.ingest.job import INGEST_JOB
from orchestration.instance import open_instance
from orchestration.jobs import FULL_BUILD_JOB
from orchestration.settings import Settings


def test_runs_are_recorded_on_the_open_instance_it_is_given(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm refresher passes the instance it keeps open: no run opens another."""
    with open_instance(settings) as instance:

        def reopened(*_args, **_kwargs) -> DagsterInstance:
            raise AssertionError("report_run opened the instance again")

        monkeypatch.setattr(DagsterInstance, "from_config", reopened)
        assert report_run(INGEST_JOB, settings, instance)
        assert report_run(INGEST_JOB, settings, instance)
        runs = instance.get_runs()
    assert [run.job_name for run in runs] == [INGEST_JOB, INGEST_JOB]
    assert all(run.is_success for run in runs)


def test_the_summary_counts_rejected_files(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = settings.landing_folder("events")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "good.csv").write_text(
        "user_id,item_id,event_type,timestamp\nu1,i1,view,2024-05-01T10:00:00Z\n"
    )
    (folder / "bad.csv").write_bytes(b"\xff\xfe not text")

    assert report_run(INGEST_JOB, settings)

    printed = capsys.readouterr().out
    kept = settings.rejected_folder("events")
    assert f"raw_events: 2 new file(s) (1 rejected, kept in {kept}), rows read 1" in printed
    assert [path.name.endswith("__bad.csv") for path in kept.iterdir()] == [True]


def test_a_failed_check_says_why(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    """A catalog and no events: the build stops at the interactions check, which names what it
    found, not just its own name."""
    folder = settings.landing_folder("items")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text("item_id,title\ni1,One\ni2,Two\n")

    assert not report_run(FULL_BUILD_JOB, settings)

    printed = capsys.readouterr().out
    assert "FAILED: marts/interactions check_interactions_mart" in printed
    assert "no events loaded yet: deliver behaviour first (freshrank ingest --events" in printed


def test_check_reasons_come_from_the_checks_own_reasons_or_the_suites_failures() -> None:
    from dagster import MetadataValue

    from orchestration.app.reporting import check_reasons

    own = {"reasons": MetadataValue.text("no events loaded yet"), "rows_validated": 0}
    suite = {
        "failures": MetadataValue.text(
            "expect_column_values_to_be_unique on item_id (2 unexpected)"
        )
    }
    assert check_reasons(own) == "no events loaded yet"
    assert check_reasons(suite) == "expect_column_values_to_be_unique on item_id (2 unexpected)"
    assert check_reasons({"rows_validated": 3}) is None


def test_a_publish_says_whose_lists_it_replaced_and_how_many_users_are_served() -> None:
    refresh = {"users_replaced": 1, "rows_published": 10, "users": 418, "serving_store": "s"}
    assert published_line(refresh) == (
        "published 10 rows (the lists of 1 user(s)) to s; it serves 418 users"
    )
    full = {**refresh, "users_replaced": "all", "rows_published": 4180}
    assert published_line(full).startswith("published 4180 rows (every user's lists) to s")
