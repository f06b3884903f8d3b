"""`freshrank demo`, the README's first command: the packaged sample ingested, built, published."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ml.datasets import movielens_sample
from orchestration.app.cli import main
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

pytestmark = pytest.mark.slow

K = 5


def test_the_demo_ingests_builds_and_publishes_the_packaged_sample(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHRANK_TOP_K", str(K))
    # Fewer, wider backtest cuts than the default: the demo's path, in a fraction of its time.
    monkeypatch.setenv("FRESHRANK_BACKTEST_CUTS", "2")
    monkeypatch.setenv("FRESHRANK_BACKTEST_TRAINING_CUTS", "1")
    monkeypatch.setenv("FRESHRANK_BACKTEST_MAX_USERS", "300")

    result = CliRunner().invoke(main, ["demo", "--replay-batches", "0"])

    assert result.exit_code == 0, result.output
    _, events = movielens_sample()
    assert (
        f"movielens_events.csv: read {len(events)}, loaded {len(events)}, quarantined 0"
        in result.output
    )
    assert "demo finished in" in result.output
    store = ServingStore(settings.serving_url)
    lists = store.all_lists()
    store.dispose()
    assert lists["user_id"].nunique() == events["user_id"].nunique()
    assert (lists.groupby("user_id").size() == K).all()
