from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.experiments.store import RUNNING, STARTING, STOPPED, ExperimentStore

GENERATED = datetime(2026, 1, 1, 12, 0, 0)


def two_arms(name: str = "ab1") -> ExperimentDesign:
    return ExperimentDesign(
        name,
        (
            Variant("control", 0.5, "champion", version="1"),
            Variant("treatment", 0.5, "challenger", version="2"),
        ),
    )


def variant_lists(design: ExperimentDesign, users: list[str], k: int = 3) -> pd.DataFrame:
    """k rows per user from their variant: items '<variant>-<rank>'."""
    rows = []
    for user in users:
        variant = design.variant(design.assign(user))
        for rank in range(1, k + 1):
            rows.append(
                {
                    "variant": variant.name,
                    "user_id": user,
                    "rank": rank,
                    "item_id": f"{variant.name}-{rank}",
                    "score": 1.0 / rank,
                    "reason": "popular now",
                    "model_version": f"freshrank-ranking/{variant.version}:ranker",
                    "generated_at": GENERATED,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def experiments(serving_url: str):
    engine = sa.create_engine(serving_url)
    yield ExperimentStore(engine)
    engine.dispose()


def test_an_experiment_runs_only_once_its_lists_are_published(experiments) -> None:
    design = two_arms()
    experiments.start(design)
    assert experiments.get("ab1").status == STARTING
    assert experiments.assigned("u1") is None  # nothing served before the lists exist
    users = [f"u{n}" for n in range(20)]
    assert experiments.publish_lists("ab1", variant_lists(design, users)) == 60
    assert experiments.get("ab1").status == RUNNING
    assignment = experiments.assigned("u1")
    assert assignment is not None and assignment.variant.name == design.assign("u1")
    assert assignment.variant.version == ("1" if assignment.variant.name == "control" else "2")
    served = experiments.recommendations(assignment, "u1", k=2)
    assert served["item_id"].tolist() == [
        f"{assignment.variant.name}-1",
        f"{assignment.variant.name}-2",
    ]


def test_a_reason_quoting_a_long_title_is_cut_to_its_column(experiments) -> None:
    from orchestration.serving.store import REASON_LENGTH

    design = two_arms()
    experiments.start(design)
    lists = variant_lists(design, ["u1"], k=1)
    lists["reason"] = "because you viewed " + "T" * 1_000
    experiments.publish_lists("ab1", lists)
    (reason,) = experiments.lists("ab1")["reason"]
    assert len(reason) == REASON_LENGTH and reason.endswith("\u2026")


def test_a_refresh_replaces_only_the_scope_and_keeps_the_rest(experiments) -> None:
    design = two_arms()
    experiments.start(design)
    experiments.publish_lists("ab1", variant_lists(design, ["u1", "u2"]))
    newer = variant_lists(design, ["u2"], k=1)
    experiments.publish_lists("ab1", newer, users=["u1", "u2"])
    lists = experiments.lists("ab1")
    assert lists.groupby("user_id").size().to_dict() == {"u2": 1}


def test_exposures_keep_who_saw_what_when(experiments) -> None:
    design = two_arms()
    experiments.start(design)
    experiments.publish_lists("ab1", variant_lists(design, ["u1"]))
    assignment = experiments.assigned("u1")
    served = experiments.recommendations(assignment, "u1", k=3)
    moment = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    experiments.log_exposure(
        assignment, "u1", served["item_id"].tolist(), served["model_version"].iat[0], moment
    )
    exposures = experiments.exposures("ab1")
    assert len(exposures) == 1
    row = exposures.iloc[0]
    assert row["user_id"] == "u1" and row["variant"] == assignment.variant.name
    assert row["items"] == served["item_id"].tolist()
    assert row["served_at"] == pd.Timestamp("2026-03-01 09:30")  # naive UTC
    assert row["model_version"] == served["model_version"].iloc[0]


def test_one_experiment_at_a_time_and_names_are_never_reused(experiments) -> None:
    experiments.start(two_arms("first"))
    with pytest.raises(ValueError, match="'first' is still running: stop it first"):
        experiments.start(two_arms("second"))
    experiments.stop("first", promoted="treatment")
    stopped = experiments.get("first")
    assert stopped.status == STOPPED and stopped.promoted == "treatment"
    with pytest.raises(ValueError, match="already exists; names are not reused"):
        experiments.start(two_arms("first"))
    with pytest.raises(ValueError, match="already stopped"):
        experiments.stop("first")
    experiments.start(two_arms("second"))
    assert experiments.active().name == "second"


def test_a_stop_drops_the_lists_keeps_exposures_and_serves_no_one(experiments) -> None:
    design = two_arms()
    experiments.start(design)
    experiments.publish_lists("ab1", variant_lists(design, ["u1"]))
    assignment = experiments.assigned("u1")
    experiments.log_exposure(assignment, "u1", ["A-1"], "freshrank-ranking/1:ranker")
    with pytest.raises(ValueError, match="has no variant 'nope'"):
        experiments.stop("ab1", promoted="nope")
    experiments.stop("ab1")
    assert experiments.assigned("u1") is None
    assert experiments.lists("ab1").empty
    assert len(experiments.exposures("ab1")) == 1


def test_unknown_experiments_and_unresolved_versions_are_refused(experiments) -> None:
    with pytest.raises(
        ValueError, match="no experiment called 'ghost' \\(experiments: none yet\\)"
    ):
        experiments.get("ghost")
    unresolved = ExperimentDesign(
        "x", (Variant("a", 0.5, "champion"), Variant("b", 0.5, "challenger"))
    )
    with pytest.raises(ValueError, match="resolved version"):
        experiments.start(unresolved)
    with pytest.raises(ValueError, match="lack column\\(s\\): variant"):
        experiments.publish_lists("x", pd.DataFrame({"user_id": ["u1"]}))


def test_a_publish_for_everyone_is_a_new_version_written_in_chunks(serving_url: str) -> None:
    engine = sa.create_engine(serving_url)
    experiments = ExperimentStore(engine, chunk_rows=4)
    design = two_arms()
    experiments.start(design)
    users = [f"u{n}" for n in range(20)]
    experiments.publish_lists("ab1", variant_lists(design, users))
    broken = variant_lists(design, users, k=1)
    with pytest.raises(sa.exc.IntegrityError):  # a duplicate key in the last chunk
        experiments.publish_lists("ab1", pd.concat([broken, broken.tail(1)], ignore_index=True))
    assert experiments.lists("ab1").groupby("user_id").size().unique().tolist() == [3]
    experiments.publish_lists("ab1", broken)
    assert experiments.lists("ab1").groupby("user_id").size().unique().tolist() == [1]
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT count(*) FROM experiment_lists")).scalar_one()
    assert stored == 20  # the replaced and the failed versions' rows are gone
    engine.dispose()


def test_experiment_lists_made_before_versions_are_upgraded(serving_url: str) -> None:
    engine = sa.create_engine(serving_url)
    columns = ", ".join(
        f"{name} {kind}"
        for name, kind in (
            ("experiment", "VARCHAR(100)"),
            ("user_id", "VARCHAR(255)"),
            ("rank", "INTEGER"),
            ("variant", "VARCHAR(100)"),
            ("item_id", "VARCHAR(255)"),
            ("score", "FLOAT"),
            ("reason", "VARCHAR(500)"),
            ("model_version", "VARCHAR(255)"),
            ("generated_at", "TIMESTAMP"),
        )
    )
    design = two_arms()
    old = variant_lists(design, ["u1", "u2"]).assign(experiment="ab1")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                f"CREATE TABLE experiment_lists ({columns}, "
                "PRIMARY KEY (experiment, user_id, rank))"
            )
        )
        old.to_sql("experiment_lists", connection, if_exists="append", index=False)
    experiments = ExperimentStore(engine)
    assert experiments.lists("ab1")["item_id"].tolist() == old["item_id"].tolist()
    experiments.start(two_arms("ab2"))
    experiments.publish_lists("ab2", variant_lists(design, ["u3"]))
    assert experiments.lists("ab1").empty and len(experiments.lists("ab2")) == 3
    engine.dispose()
