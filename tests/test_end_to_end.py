"""The whole asset graph in-process on real DuckDB, dbt, Great Expectations and SQLite.

A few hundred events cut from the packaged MovieLens sample plus hand-made bad rows go through
`freshrank ingest`, then the full build publishes lists that are checked here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from ml.datasets import movielens_sample
from orchestration.app.cli import main
from orchestration.app.reporting import only_review_failed
from orchestration.instance import run_job_in_process
from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

pytestmark = pytest.mark.slow

USERS = 60
K = 5
BAD_EVENTS = [
    {"user_id": "", "item_id": "1", "event_type": "view", "timestamp": "2016-01-01T00:00:00"},
    {"user_id": "u-bad", "item_id": "1", "event_type": "teleport", "timestamp": "2016-01-01"},
    {"user_id": "u-bad", "item_id": "1", "event_type": "view", "timestamp": "yesterday-ish"},
    {"user_id": "u-bad", "item_id": "1", "event_type": "rate", "timestamp": "2016-01-01"},
    {"user_id": "u-bad", "item_id": "1", "event_type": "view", "timestamp": "2999-01-01T00:00:00"},
]
BAD_REASON_COLUMNS = {"user_id", "event_type", "timestamp", "value"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Sample files on disk and a FRESHRANK_HOME of its own for the whole module."""
    root = tmp_path_factory.mktemp("e2e")
    items, events = movielens_sample()
    users = sorted(events["user_id"].unique(), key=int)[:USERS]
    sample = events[events["user_id"].isin(users)].groupby("user_id").head(40)
    catalog = items[items["item_id"].isin(sample["item_id"])]
    inputs = root / "inputs"
    inputs.mkdir()
    catalog.to_csv(inputs / "items.csv", index=False)
    events_file = inputs / "events.csv"
    pd.concat([sample, pd.DataFrame(BAD_EVENTS)], ignore_index=True).to_csv(
        events_file, index=False
    )
    late = sample.tail(3).assign(event_type="click", value=None)
    with open(inputs / "late.jsonl", "w") as handle:
        for record in late.to_dict("records"):
            handle.write(json.dumps({**record, "value": None}) + "\n")
        handle.write('{"user_id": "1", "item_id": \n')  # a malformed line
    sample.drop(columns=["timestamp"]).to_csv(inputs / "no_timestamp.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRESHRANK_HOME", str(root / "home"))
        patch.setenv("FRESHRANK_TOP_K", str(K))
        # Small backtests that still train and judge the ranker on a few thousand events.
        patch.setenv("FRESHRANK_BACKTEST_CUTS", "2")
        patch.setenv("FRESHRANK_BACKTEST_TRAINING_CUTS", "2")
        patch.setenv("FRESHRANK_BACKTEST_WINDOW_FRACTION", "0.15")
        patch.setenv("FRESHRANK_BACKTEST_MIN_USERS", "3")
        for variable in (
            "FRESHRANK_SERVING_URL",
            "FRESHRANK_WAREHOUSE_PATH",
            "DAGSTER_HOME",
            "FRESHRANK_LANDING_DIR",
            "MLFLOW_TRACKING_URI",
        ):
            patch.delenv(variable, raising=False)
        yield {
            "inputs": inputs,
            "settings": Settings.from_env(),
            "sample": sample,
            "catalog": catalog,
        }


def _ingest(*arguments: str) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(main, ["ingest", *arguments, "--json"])
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    return result.exit_code, lines


def _warehouse(settings: Settings, query: str) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        return connection.sql(query).df()


def test_ingest_loads_good_rows_and_quarantines_bad_ones(world: dict) -> None:
    inputs = world["inputs"]
    code, results = _ingest(
        "--items",
        str(inputs / "items.csv"),
        "--events",
        str(inputs / "events.csv"),
        "--events",
        str(inputs / "late.jsonl"),
    )
    assert code == 0, results
    by_file = {Path(result["file"]).name: result for result in results}
    events = by_file["events.csv"]
    assert events["status"] == "loaded"
    assert events["rows_read"] == len(world["sample"]) + len(BAD_EVENTS)
    assert events["rows_loaded"] == len(world["sample"])
    assert events["rows_quarantined"] == len(BAD_EVENTS)
    late = by_file["late.jsonl"]
    assert (late["rows_loaded"], late["rows_quarantined"]) == (3, 1)
    for result in results:
        assert result["rows_read"] == result["rows_loaded"] + result["rows_quarantined"]
    quarantine = _warehouse(world["settings"], "select * from raw.quarantine")
    assert set(quarantine["column_name"].dropna()) == BAD_REASON_COLUMNS
    assert quarantine["source_file"].str.contains("events.csv").sum() == len(BAD_EVENTS)


def test_same_file_twice_is_a_duplicate(world: dict) -> None:
    code, results = _ingest("--items", str(world["inputs"] / "items.csv"))
    assert code == 0
    assert [(result["status"], result["rows_loaded"]) for result in results] == [("duplicate", 0)]


def test_file_without_a_required_column_is_rejected(world: dict) -> None:
    bad = world["inputs"] / "no_timestamp.csv"
    before = bad.read_bytes()
    code, results = _ingest("--events", str(bad))
    assert code != 0
    assert results[0]["status"] == "rejected"
    assert "timestamp" in results[0]["message"]
    assert bad.read_bytes() == before  # the original stays where it was
    loaded = _warehouse(world["settings"], "select count(*) as n from raw.events")["n"].iloc[0]
    assert loaded == len(world["sample"]) + 3


def test_ingest_tells_a_person_where_rows_broke(world: dict) -> None:
    typo = world["inputs"] / "typo.csv"
    typo.write_text("user_id,item_id,event_type,timestamp\nu1,i1,veiw,2024-05-01T10:00:00Z\n")
    result = CliRunner().invoke(main, ["ingest", "--events", str(typo)])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if "typo.csv" in line]
    assert line.startswith("loaded ")
    assert f"{typo}: loaded 0 of 1 row(s), quarantined 1: row 1, " in line
    assert "column event_type: " in line and "'veiw'" in line


def test_full_build_publishes_checked_lists(world: dict) -> None:
    settings = world["settings"]
    built = run_job_in_process(FULL_BUILD_JOB, settings)
    assert built.success or only_review_failed(built)
    evaluations = built.get_asset_check_evaluations()
    gate = "check_challenger_beats_champion"
    blocking_failures = [
        e
        for e in evaluations
        if not e.passed and e.severity.value == "ERROR" and e.check_name != gate
    ]
    assert evaluations and not blocking_failures
    assert gate in {e.check_name for e in evaluations}
    result = run_job_in_process(PUBLISH_JOB, settings)
    assert result.success
    lists = ServingStore(settings.serving_url).all_lists()
    sample = world["sample"]
    assert set(lists["user_id"]) == set(sample["user_id"])
    assert (lists.groupby("user_id").size() == K).all()
    consumed = set(zip(sample["user_id"], sample["item_id"], strict=True))
    assert not any(
        pair in consumed for pair in zip(lists["user_id"], lists["item_id"], strict=True)
    )
    assert not lists.duplicated(["user_id", "item_id"]).any()
    for _, user_list in lists.groupby("user_id"):
        assert user_list.sort_values("rank")["score"].is_monotonic_decreasing
    assert lists["reason"].str.len().gt(0).all()
    assert lists["model_version"].nunique() == 1

    marts = _warehouse(settings, "select count(*) as n from marts.interactions")
    assert marts["n"].iloc[0] == len(sample) + 3


def test_cli_reads_and_exports_the_published_lists(world: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    user = world["sample"]["user_id"].iloc[0]
    shown = runner.invoke(main, ["recommend", user, "-k", "3", "--json"])
    assert shown.exit_code == 0, shown.output
    payload = json.loads(shown.output)
    assert payload["user_id"] == user and len(payload["items"]) == 3
    assert {"item_id", "score", "reason"} <= set(payload["items"][0])
    stranger = runner.invoke(main, ["recommend", "nobody-we-know"])
    assert stranger.exit_code == 1
    assert "the HTTP API serves them the trending list" in stranger.output
    for name in ("lists.csv", "lists.parquet"):
        exported = runner.invoke(main, ["export", "--out", str(tmp_path / name)])
        assert exported.exit_code == 0, exported.output
    frame = pd.read_parquet(tmp_path / "lists.parquet")
    assert list(frame.columns) == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "reason",
        "model_version",
        "generated_at",
    ]
    assert len(pd.read_csv(tmp_path / "lists.csv", dtype={"user_id": str})) == len(frame)


def test_the_registered_model_predicts_what_its_pipeline_ranks(world: dict) -> None:
    """MLflow's own loading of a registered version (the pyfunc logged as code) ranks a user's
    events into exactly the lists the fitted pipeline gives."""
    import mlflow.pyfunc

    from ml import tracking
    from ml.pipeline.snapshot import Behaviour

    settings = world["settings"]
    tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    sample = world["sample"]
    users = sample["user_id"].drop_duplicates().iloc[:3]
    events = sample[sample["user_id"].isin(users)]
    events = events.assign(
        occurred_at=pd.to_datetime(events["timestamp"], unit="s", utc=True), weight=1.0
    )[["user_id", "item_id", "event_type", "weight", "occurred_at"]]
    model = mlflow.pyfunc.load_model(f"models:/{tracking.REGISTERED_MODEL}/1")
    predicted = model.predict(events)
    expected = tracking.load_version(settings.mlflow_tracking_uri, "1").recommend(Behaviour(events))
    assert set(predicted["user_id"]) == set(users)
    pd.testing.assert_frame_equal(predicted.reset_index(drop=True), expected.reset_index(drop=True))


def test_the_champion_serves_every_user_from_a_cached_copy(world: dict) -> None:
    from ml import tracking

    settings = world["settings"]
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    if tracking.alias_version(client, tracking.CHAMPION) != "1":  # the gate left it for review
        promoted = CliRunner().invoke(main, ["promote", "1"])
        assert promoted.exit_code == 0, promoted.output
    assert run_job_in_process(PUBLISH_JOB, settings).success
    lists = ServingStore(settings.serving_url).all_lists()
    pipeline = tracking.version_pipeline(client, "1")
    assert set(lists["model_version"]) == {f"{tracking.REGISTERED_MODEL}/1:{pipeline}"}
    assert set(lists["user_id"]) == set(world["sample"]["user_id"])
    cached = settings.home / "cache" / "models" / f"{tracking.REGISTERED_MODEL}-1"
    assert list(cached.rglob(tracking.PIPELINE_FILE))
    # A second publish reuses the cached files instead of downloading the version again.
    stamp = next(cached.rglob(tracking.PIPELINE_FILE)).stat().st_mtime_ns
    assert run_job_in_process(PUBLISH_JOB, settings).success
    assert next(cached.rglob(tracking.PIPELINE_FILE)).stat().st_mtime_ns == stamp


def test_the_build_judged_the_ranker_and_published_what_it_evaluates(world: dict) -> None:
    """The backtests ran the ranker against every baseline, and the lists in the serving store
    are exactly what the registered pipeline's `recommend` gives for the warehouse's state."""
    from ml import tracking
    from ml.pipeline.snapshot import Behaviour
    from orchestration.warehouse.reads import load_snapshot

    settings = world["settings"]
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    version = tracking.alias_version(client, tracking.CHAMPION)
    run_id = client.get_model_version(tracking.REGISTERED_MODEL, version).run_id
    run = client.get_run(run_id)
    assert f"ranker.overall.ndcg_at_{K}" in run.data.metrics
    assert f"popularity_all.overall.ndcg_at_{K}" in run.data.metrics
    assert run.data.params["winner"] == tracking.version_pipeline(client, version)

    snapshot = load_snapshot(settings)
    pipeline = tracking.load_version(settings.mlflow_tracking_uri, version).refreshed(snapshot)
    expected = pipeline.recommend(Behaviour(snapshot.interactions))
    published = ServingStore(settings.serving_url).all_lists()
    columns = ["user_id", "rank", "item_id", "reason"]
    order = ["user_id", "rank"]
    expected = expected.sort_values(order).reset_index(drop=True)
    published = published.sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        expected[columns], published[columns].astype({"rank": expected["rank"].dtype})
    )
    assert (expected["score"] - published["score"]).abs().max() < 1e-9


def test_evaluate_prints_the_builds_backtests_and_their_table_reads_back(world: dict) -> None:
    from ml import tracking

    settings = world["settings"]
    printed = CliRunner().invoke(main, ["evaluate"])
    assert printed.exit_code == 0, printed.output
    assert "| ranker " in printed.output and "| popularity_all " in printed.output
    assert "paired-bootstrap interval" in printed.output
    winner = tracking.latest_winner(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    assert printed.output.startswith(f"Winner: {winner}\n")

    table = tracking.latest_backtest_table(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_location
    )
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    version = tracking.alias_version(client, tracking.CHAMPION)
    run = client.get_run(client.get_model_version(tracking.REGISTERED_MODEL, version).run_id)
    for pipeline in ("ranker", "popularity_all"):
        rows = table[(table["pipeline"] == pipeline) & (table["segment"] == "overall")]
        assert len(rows) == 2  # the world's two evaluated cuts
        assert rows[f"ndcg@{K}"].mean() == pytest.approx(
            run.data.metrics[f"{pipeline}.overall.ndcg_at_{K}"]
        )


def test_failing_blocking_check_keeps_the_previous_lists(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = world["settings"]
    before = ServingStore(settings.serving_url).all_lists()
    import orchestration.serving.scoring as scoring

    real_write = scoring._write_shard

    def broken_write(into, spool, version, generated_at, shard):
        """Every shard's lists repeat their first item: into the new version and the spool."""
        lists, candidates = shard
        lists = lists.assign(item_id=lists.groupby("user_id")["item_id"].transform("first"))
        return real_write(into, spool, version, generated_at, (lists, candidates))

    monkeypatch.setattr(scoring, "_write_shard", broken_write)
    result = run_job_in_process(PUBLISH_JOB, settings)
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert "check_recommendation_lists" in failed
    published = [
        event.asset_key.to_user_string() for event in result.get_asset_materialization_events()
    ]
    assert "published_recommendations" not in published
    after = ServingStore(settings.serving_url).all_lists()
    pd.testing.assert_frame_equal(before, after)


def test_item_embeddings_are_incremental(world: dict) -> None:
    """The full build embedded every catalog item once; a second pass embeds nothing new."""
    from orchestration.features.assets import refresh_item_embeddings

    settings = world["settings"]
    vectors = _warehouse(settings, "select item_id, content_hash from ml.item_embeddings")
    catalog = _warehouse(settings, "select item_id from marts.items")
    assert sorted(vectors["item_id"]) == sorted(catalog["item_id"])
    figures = refresh_item_embeddings(settings, settings.embedding)
    assert figures["embedded"] == 0 and figures["reused"] == len(catalog)


def _refresh_batch(world: dict, name: str, rows: list[dict]) -> Path:
    path = world["inputs"] / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_refresh_rescores_only_the_users_a_batch_touched(world: dict) -> None:
    from orchestration.app.watch import refresh_job_for
    from orchestration.jobs import REFRESH_EVENTS_JOB

    settings = world["settings"]
    sample = world["sample"]
    before = ServingStore(settings.serving_url).all_lists()
    returning = sample["user_id"].iloc[0]
    untouched = sorted(set(sample["user_id"]) - {returning})
    catalog = world["catalog"]["item_id"].tolist()
    newest = int(sample["timestamp"].max())
    batch = [
        {"user_id": "brand-new", "item_id": item, "event_type": "click", "timestamp": newest + i}
        for i, item in enumerate(catalog[:3])
    ] + [{"user_id": returning, "item_id": catalog[-1], "event_type": "view", "timestamp": newest}]
    path = _refresh_batch(world, "batch1.csv", batch)
    code, results = _ingest("--events", str(path))
    assert code == 0 and results[0]["rows_loaded"] == len(batch)

    # Events alone, the catalog loaded before the last publish: no catalog steps to run.
    assert refresh_job_for(settings) == REFRESH_EVENTS_JOB
    result = run_job_in_process(REFRESH_EVENTS_JOB, settings)
    assert result.success
    steps = {event.step_key for event in result.all_events if event.step_key}
    assert "recommendation_lists" in steps and not steps & {"raw_items", "item_embeddings"}
    after = ServingStore(settings.serving_url).all_lists()
    new_user = after[after["user_id"] == "brand-new"]
    assert len(new_user) == K
    assert not set(new_user["item_id"]) & set(catalog[:3])  # what they just clicked is not listed
    assert catalog[-1] not in set(after.loc[after["user_id"] == returning, "item_id"])
    kept = before[before["user_id"].isin(untouched)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        kept, after[after["user_id"].isin(untouched)].reset_index(drop=True)
    )

    # The same batch delivered again changes nothing.
    code, results = _ingest("--events", str(path))
    assert results[0]["status"] == "duplicate"
    again = run_job_in_process(refresh_job_for(settings), settings)
    assert again.success
    final = ServingStore(settings.serving_url).all_lists()
    pd.testing.assert_frame_equal(
        after.drop(columns="generated_at"), final.drop(columns="generated_at")
    )


def test_refresh_killed_midway_keeps_lists_and_the_next_one_completes(world: dict) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from orchestration.jobs import REFRESH_JOB

    settings = world["settings"]
    before = ServingStore(settings.serving_url).all_lists()
    catalog = world["catalog"]["item_id"].tolist()
    newest = int(world["sample"]["timestamp"].max())
    path = _refresh_batch(
        world,
        "batch_killed.csv",
        [
            {
                "user_id": "late-arrival",
                "item_id": catalog[4],
                "event_type": "purchase",
                "timestamp": newest + 60,
            }
        ],
    )
    code, _ = _ingest("--events", str(path))  # loaded into raw; lists not yet refreshed
    assert code == 0
    dbt_logs = settings.home / "logs"
    existing_logs = set(dbt_logs.glob("dbt-*.log"))
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.app.cli", "refresh"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (set(dbt_logs.glob("dbt-*.log")) - existing_logs):
        time.sleep(0.2)  # kill it once it is inside the dbt build, mid-refresh
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    pd.testing.assert_frame_equal(before, ServingStore(settings.serving_url).all_lists())

    result = run_job_in_process(REFRESH_JOB, settings)
    assert result.success
    after = ServingStore(settings.serving_url).all_lists()
    assert len(after[after["user_id"] == "late-arrival"]) == K


def test_a_warm_refresher_ranks_in_its_workers_what_this_process_ranks(world: dict) -> None:
    import os
    import subprocess
    import sys

    from orchestration.serving.scoring import score_users

    settings = world["settings"]
    catalog = world["catalog"]["item_id"].tolist()
    newest = int(world["sample"]["timestamp"].max())
    returning = world["sample"]["user_id"].iloc[1]
    batch = [
        {"user_id": "watched", "item_id": item, "event_type": "click", "timestamp": newest + i}
        for i, item in enumerate(catalog[5:8])
    ] + [{"user_id": returning, "item_id": catalog[9], "event_type": "view", "timestamp": newest}]
    landing = settings.landing_folder("events")
    landing.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(batch).to_csv(landing / "watched.csv", index=False)
    watcher = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration.app.launcher",
            "refresh",
            "--watch",
            "--max-runs",
            "1",
        ],
        env={**os.environ, "FRESHRANK_RANK_PROCESSES": "2"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert watcher.returncode == 0, watcher.stdout[-3000:] + watcher.stderr[-3000:]
    assert "2 ranking worker(s) hold the serving pipeline" in watcher.stdout
    assert "stopped after 1 refresh(es)" in watcher.stdout
    published = ServingStore(settings.serving_url).all_lists()
    # The same users ranked again here, in this process, from the same serving state.
    here = score_users(settings, ["watched", returning]).lists
    columns = ["user_id", "rank", "item_id", "score", "reason"]
    for user in ("watched", returning):
        served = published[published["user_id"] == user].sort_values("rank")[columns]
        ranked = here[here["user_id"] == user].sort_values("rank")[columns]
        assert len(served) == K
        pd.testing.assert_frame_equal(
            served.reset_index(drop=True), ranked.reset_index(drop=True), check_dtype=False
        )


def test_an_item_withdrawn_from_the_catalog_leaves_every_list_at_the_next_refresh(
    world: dict,
) -> None:
    """`available: false` in a catalog delivery is a withdrawal: the refresh rescores the users
    whose lists hold the item, though none of them did anything (it rescored no one before),
    and takes it out of the other users' candidate pools (request-time personalisation)."""
    from orchestration.app.watch import refresh_job_for
    from orchestration.jobs import REFRESH_JOB

    def pools(store: ServingStore) -> dict[str, set[str]]:
        """Each user's candidate pool as request time reads it."""
        users = store.served_table("candidate_pools")["user_id"]
        return {
            user: {row["item_id"] for row in store.personalisation_inputs(user, [], 1)[0]}
            for user in users
        }

    def holders(pools: dict[str, set[str]], item: str) -> set[str]:
        return {user for user, items in pools.items() if item in items}

    settings = world["settings"]
    store = ServingStore(settings.serving_url)
    before, pools_before = store.all_lists(), pools(store)
    # A listed item that also waits in pools of users who do not list it: both paths are tried.
    listed = before["item_id"].value_counts().index[:20]
    withdrawn = max(
        listed,
        key=lambda item: len(
            holders(pools_before, item) - set(before.loc[before["item_id"] == item, "user_id"])
        ),
    )
    listing = set(before.loc[before["item_id"] == withdrawn, "user_id"])
    assert listing and holders(pools_before, withdrawn) - listing
    catalog = world["catalog"]
    row = catalog[catalog["item_id"] == withdrawn].assign(available=False)
    path = world["inputs"] / "withdrawn.csv"
    row.to_csv(path, index=False)
    code, results = _ingest("--items", str(path))
    assert code == 0 and results[0]["rows_loaded"] == 1

    assert refresh_job_for(settings) == REFRESH_JOB
    assert run_job_in_process(REFRESH_JOB, settings).success

    store = ServingStore(settings.serving_url)
    after = store.all_lists()
    related = store.served_table("related_items")
    assert withdrawn not in set(after["item_id"])
    assert withdrawn not in set(related["related_item_id"])  # nor in GET /items/{id}/similar
    assert holders(pools(store), withdrawn) == set()
    assert (after[after["user_id"].isin(listing)].groupby("user_id").size() == K).all()
    others = sorted(set(before["user_id"]) - listing)
    pd.testing.assert_frame_equal(
        before[before["user_id"].isin(others)].reset_index(drop=True),
        after[after["user_id"].isin(others)].reset_index(drop=True),
    )

    # Available again: the next refresh gives it back to the pools that still hold it (those of
    # the users it did not rescore), with no user's list rescored for it.
    row.assign(available=True).to_csv(world["inputs"] / "available_again.csv", index=False)
    code, results = _ingest("--items", str(world["inputs"] / "available_again.csv"))
    assert code == 0 and results[0]["rows_loaded"] == 1
    assert run_job_in_process(REFRESH_JOB, settings).success
    store = ServingStore(settings.serving_url)
    assert holders(pools(store), withdrawn) == holders(pools_before, withdrawn) - listing
    assert store.withdrawn_items() == []
    pd.testing.assert_frame_equal(store.all_lists(), after)
