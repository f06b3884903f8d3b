from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, OCCURRED_AT, SPLIT, USER_ID, WEIGHT
from ml.models.sequential import SequentialConfig
from ml.training import (
    BASELINES,
    BLENDED_MODEL,
    MAIN_MODEL,
    ONE_MEMBER_MODEL,
    SERVED_MODEL,
    TrainingConfig,
    train_and_evaluate,
)

ITEMS = [f"i{number}" for number in range(12)]
NEW_ITEMS = ["n0", "n1"]  # in the catalog, first touched after the cutoff


def world(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Users walk a cycle over 12 items; after the cutoff, new users arrive and new items appear.

    Returns the splits frame, the catalog and text vectors (new items share the text direction
    of the item they follow in the cycle, so text can tell where they belong).
    """
    generator = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for user in range(40):
        offset = int(generator.integers(len(ITEMS)))
        late = user >= 30  # these users only arrive after the cutoff
        for step in range(10):
            item = ITEMS[(offset + step) % len(ITEMS)]
            minutes = (10_000 if late else user * 100) + step
            rows.append((f"u{user}", item, 1.0, start + pd.Timedelta(minutes=minutes), late))
            if late and step == 4:
                rows.append(
                    (
                        f"u{user}",
                        NEW_ITEMS[user % 2],
                        1.0,
                        start + pd.Timedelta(minutes=minutes, seconds=30),
                        True,
                    )
                )
    frame = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, WEIGHT, OCCURRED_AT, "late"])
    frame[SPLIT] = np.where(frame.pop("late"), "validation", "train")
    catalog = pd.Series(ITEMS + NEW_ITEMS)
    vectors = generator.normal(size=(len(ITEMS) + len(NEW_ITEMS), 8))
    vectors[len(ITEMS) :] = vectors[[4, 9]] + 0.05 * vectors[len(ITEMS) :]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return frame, catalog, pd.DataFrame(vectors, index=catalog.to_numpy())


TINY = SequentialConfig(
    max_length=8,
    hidden_size=16,
    heads=2,
    layers=1,
    dropout=0.0,
    batch_size=16,
    learning_rate=1e-2,
    max_epochs=6,
    min_epochs=1,
    seed=3,
    threads=1,
)


@pytest.fixture(scope="module")
def result():
    splits, catalog, vectors = world()
    return train_and_evaluate(splits, catalog, vectors, TrainingConfig(sequential=TINY, k=3))


def test_every_model_and_segment_is_in_one_table(result) -> None:
    models = set(result.evaluation["model"])
    expected = {*BASELINES, MAIN_MODEL, BLENDED_MODEL, SERVED_MODEL, ONE_MEMBER_MODEL}
    assert expected | {"sequential_id_only", "sequential_text_only"} == models
    segments = set(result.evaluation["segment"])
    assert segments == {"overall", "new_user", "returning_user", "new_item_targets"}
    assert result.metric(MAIN_MODEL) == pytest.approx(
        result.evaluation.query("model == @MAIN_MODEL and segment == 'overall'")["ndcg@3"].iloc[0]
    )


def test_the_model_is_refitted_on_all_of_train_for_the_chosen_epochs(result) -> None:
    from ml.models.sequential import SequentialEnsemble

    assert isinstance(result.model, SequentialEnsemble)
    assert [member.config.seed for member in result.model.members] == [TINY.seed, TINY.seed + 1]
    assert 1 <= result.best_epoch <= TINY.max_epochs
    assert len(result.model.history.epochs) == result.best_epoch
    assert "validation" not in result.model.history.epochs[0]  # the refit has no early stopping
    assert result.data_summary["train_interactions"] == 300


def test_served_lists_reach_new_items_and_id_only_cannot_rank_them(result) -> None:
    new_items = result.evaluation[result.evaluation["segment"] == "new_item_targets"]
    by_model = new_items.set_index("model")["hit_rate@3"]
    # Every late user's truth holds a new item; one place per list is kept for new items.
    assert by_model[SERVED_MODEL] > 0
    assert by_model[BLENDED_MODEL] <= by_model[SERVED_MODEL]
    assert by_model["ease"] == 0  # no interaction, no score: the new item is never listed


def test_trending_blend_is_one_of_the_candidates(result) -> None:
    from ml.training import BLEND_CANDIDATES

    assert result.trending_blend in BLEND_CANDIDATES


def test_ensemble_scores_are_the_mean_of_its_members_and_survive_a_state_round_trip(
    result,
) -> None:
    from ml.models.sequential import model_from_state

    splits, _, _ = world()
    histories = splits[splits[SPLIT] == "validation"].head(30)
    users, mean = result.model.score(histories)
    parts = [member.score(histories)[1] for member in result.model.members]
    np.testing.assert_allclose(mean, np.mean(parts, axis=0), rtol=1e-6)
    assert not np.allclose(parts[0], parts[1])  # the seeds did learn different models
    rebuilt = model_from_state(result.model.state())
    rebuilt_users, rebuilt_scores = rebuilt.score(histories)
    assert list(rebuilt_users) == list(users)
    np.testing.assert_allclose(rebuilt_scores, mean, rtol=1e-5, atol=1e-6)


def test_ensemble_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ensemble_size"):
        TrainingConfig(ensemble_size=0)


def test_the_challenger_is_compared_with_every_baseline_on_the_same_users(result) -> None:
    comparisons = result.comparisons
    assert set(comparisons["baseline"]) == set(BASELINES)
    assert set(comparisons["segment"]) == {"overall", "new_user"}
    overall = comparisons[comparisons["segment"] == "overall"].set_index("baseline")
    for name in BASELINES:
        expected = result.metric(BLENDED_MODEL, "overall", "ndcg@3") - result.metric(
            name, "overall", "ndcg@3"
        )
        assert overall.loc[name, "ndcg@3 difference"] == pytest.approx(expected, abs=1e-4)
        low, high = (float(x) for x in overall.loc[name, "95% interval"].strip("[]").split(","))
        assert low <= overall.loc[name, "ndcg@3 difference"] <= high
