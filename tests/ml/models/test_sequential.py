from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.models.sequential import SequentialConfig, SequentialRecommender

TINY = SequentialConfig(
    max_length=6,
    hidden_size=16,
    heads=2,
    layers=1,
    dropout=0.0,
    id_dropout=0.0,
    max_epochs=40,
    learning_rate=1e-2,
    batch_size=16,
    future_window=1,
    seed=3,
    threads=1,
)


def cycle_interactions(users: int = 12) -> pd.DataFrame:
    """Every user walks the cycle a -> b -> c -> d -> a ... starting somewhere."""
    items = ["a", "b", "c", "d"]
    rows = []
    for user in range(users):
        for step in range(8):
            rows.append(
                {
                    "user_id": f"u{user}",
                    "item_id": items[(user + step) % 4],
                    "occurred_at": pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=step),
                    "weight": 1.0,
                }
            )
    return pd.DataFrame(rows)


def text_vectors(ids: list[str], dimension: int = 8) -> pd.DataFrame:
    generator = np.random.default_rng(0)
    values = generator.normal(size=(len(ids), dimension))
    values /= np.linalg.norm(values, axis=1, keepdims=True)
    return pd.DataFrame(values, index=ids)


@pytest.fixture(scope="module")
def trained() -> SequentialRecommender:
    return SequentialRecommender(TINY).fit(
        cycle_interactions(),
        catalog_item_ids=["a", "b", "c", "d", "new"],
        text_vectors=text_vectors(["a", "b", "c", "d", "new"]),
    )


def test_learns_the_next_item_of_a_sequence(trained: SequentialRecommender) -> None:
    history = pd.DataFrame(
        {
            "user_id": ["fresh", "fresh"],
            "item_id": ["a", "b"],
            "occurred_at": pd.to_datetime(["2024-02-01 10:00", "2024-02-01 10:01"]),
        }
    )
    users, scores = trained.score(history)
    assert users.tolist() == ["fresh"]  # a user never seen in training is scored from history
    ranked = trained.item_ids[np.argsort(-scores[0])]
    assert ranked[0] == "c"


def test_is_deterministic_on_cpu() -> None:
    first = SequentialRecommender(TINY).fit(
        cycle_interactions(), text_vectors=text_vectors(list("abcd"))
    )
    second = SequentialRecommender(TINY).fit(
        cycle_interactions(), text_vectors=text_vectors(list("abcd"))
    )
    history = cycle_interactions().head(3)
    np.testing.assert_array_equal(first.score(history)[1], second.score(history)[1])


def test_state_round_trip(trained: SequentialRecommender) -> None:
    restored = SequentialRecommender.from_state(trained.state())
    history = cycle_interactions().head(5)
    np.testing.assert_allclose(restored.score(history)[1], trained.score(history)[1], atol=1e-6)


def test_untouched_items_are_scored_through_text_and_new_catalog_items_join(
    trained: SequentialRecommender,
) -> None:
    history = cycle_interactions().head(3)
    _, scores = trained.score(history)
    assert scores[0, list(trained.item_ids).index("new")] != 0.0
    vectors = text_vectors(["a", "b", "c", "d", "new", "newer"])
    extended = trained.with_catalog(["a", "b", "c", "d", "new", "newer"], vectors)
    assert "newer" in set(extended.item_ids)
    users, extended_scores = extended.score(history)
    known = [list(extended.item_ids).index(item) for item in "abcd"]
    original = [list(trained.item_ids).index(item) for item in "abcd"]
    np.testing.assert_allclose(extended_scores[0, known], scores[0, original], atol=1e-5)


def test_id_only_gives_unseen_items_nothing() -> None:
    config = SequentialConfig(**{**TINY.__dict__, "use_text": False, "max_epochs": 2})
    model = SequentialRecommender(config).fit(cycle_interactions(), catalog_item_ids=["new"])
    _, scores = model.score(cycle_interactions().head(3))
    assert scores[0, list(model.item_ids).index("new")] == 0.0


def test_needs_ids_or_text() -> None:
    with pytest.raises(ValueError, match="IDs, item text, or both"):
        SequentialConfig(use_ids=False, use_text=False)


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero() -> None:
    from ml.models.sequential import _learning_rate_factor

    cosine = _learning_rate_factor(SequentialConfig(warmup_share=0.1), total_steps=100)
    assert [cosine(step) for step in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine(10) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5)  # halfway through the 90 decay steps
    assert cosine(100) == pytest.approx(0.0)
    constant = _learning_rate_factor(SequentialConfig(lr_schedule="constant"), total_steps=100)
    assert constant(0) == constant(99) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        SequentialConfig(lr_schedule="step")


def test_stopping_after_an_epoch_follows_the_full_runs_path() -> None:
    config = SequentialConfig(**{**TINY.__dict__, "max_epochs": 4, "use_text": False})
    interactions = cycle_interactions()
    probe_users = interactions.head(5)
    seen: dict[int, np.ndarray] = {}

    def record(model: SequentialRecommender) -> float:
        seen[len(seen) + 1] = model.score(probe_users)[1].copy()
        return float(len(seen))

    SequentialRecommender(config).fit(interactions, validate=record)
    stopped = SequentialRecommender(config).fit(interactions, stop_after=2)
    assert len(stopped.history.epochs) == 2
    np.testing.assert_allclose(stopped.score(probe_users)[1], seen[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(seen[2], seen[4])


def test_simultaneous_events_give_one_sequence_whatever_the_row_order() -> None:
    config = SequentialConfig(**{**TINY.__dict__, "use_text": False, "max_epochs": 1})
    interactions = cycle_interactions().assign(occurred_at=pd.Timestamp("2024-01-01"))
    first = SequentialRecommender(config).fit(interactions)
    shuffled = SequentialRecommender(config).fit(interactions.sample(frac=1.0, random_state=5))
    probe = interactions.head(6)
    np.testing.assert_allclose(
        first.score(probe.sample(frac=1.0, random_state=1))[1], shuffled.score(probe)[1], rtol=1e-6
    )
