"""Train the sequential recommender and measure it against every baseline, on one split, in one run.

The split comes from the `interaction_splits` mart: `train` before a global cutoff, `validation`
after it. Inside `train` a second temporal cut gives the early-stopping window, so the holdout
that decides promotion is never seen while choosing epochs or the trending blend. The model is
then refitted on all of `train` for the chosen epochs, so it learns from the same (and the
newest) behaviour as the baselines it is compared with.

The evaluation table says what each part of the ranking adds:
- `sequential`: the model's scores alone;
- `sequential+trending`: blended with trending in the ranking layer (the challenger's figure,
  which the promotion gate compares with the baselines and the champion);
- `served`: that blend with `new_item_slots` places per list kept for the best items nobody has
  touched yet, as the serving layer ranks;
- `served_one_member`: the same with only the first model of the ensemble (`ensemble_size`
  models refitted from different seeds, served as their mean). The ablations
  `sequential_id_only` and `sequential_text_only` are single models trained and ranked the
  same way: compare them with this row, above all on new-item targets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ml.constants import DEFAULT_TOP_K, ITEM_ID, NEW_USER, SEGMENT, SPLIT, USER_ID, WEIGHT
from ml.evaluation.metrics import ndcg_at_k, ndcg_per_user
from ml.evaluation.protocol import (
    DEFAULT_REVEAL_FRACTION,
    OVERALL,
    EvaluationTask,
    build_task,
    evaluate_scores,
    recommend_from_scores,
    rescale_rows,
    score_task,
)
from ml.evaluation.significance import paired_bootstrap
from ml.evaluation.split import temporal_split
from ml.models.baselines import (
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    TrendingRecommender,
)
from ml.models.sequential import SequentialConfig, SequentialEnsemble, SequentialRecommender

logger = logging.getLogger("freshrank.training")

MAIN_MODEL = "sequential"
BLENDED_MODEL = "sequential+trending"
SERVED_MODEL = "served"
ONE_MEMBER_MODEL = "served_one_member"
BASELINES = ("popularity", "trending", "item_knn", "ease")
BLEND_CANDIDATES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class TrainingConfig:
    """What to train and how to judge it."""

    sequential: SequentialConfig = field(default_factory=SequentialConfig)
    k: int = DEFAULT_TOP_K
    early_stopping_fraction: float = 0.1  # the newest share of `train` used to stop early
    reveal_fraction: float = DEFAULT_REVEAL_FRACTION
    ablations: bool = True  # also train ID-only and text-only variants
    # Refitting on all of `train` for the chosen epochs costs a second training; without it the
    # model has seen less data than the baselines (a handicap, never an advantage).
    refit_on_full_train: bool = True
    # Places per list kept for items nobody has interacted with yet (0: none), as served.
    new_item_slots: int = 1
    # Models refitted from different seeds and served as their mean (1: a single model).
    ensemble_size: int = 2

    def __post_init__(self) -> None:
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be at least 1, got {self.ensemble_size!r}")


@dataclass
class TrainingResult:
    """The trained model, its chosen trending blend, and the evaluation table."""

    model: SequentialRecommender | SequentialEnsemble
    trending_blend: float
    evaluation: pd.DataFrame  # model, segment, users, metrics...
    epochs: list[dict[str, float]]
    best_epoch: int
    data_summary: dict[str, object]
    seconds: float
    task: EvaluationTask
    item_ids: np.ndarray
    trending_scores: np.ndarray  # the trending baseline on the holdout, for blending
    # The challenger's NDCG@k minus each baseline's, by segment, with bootstrap intervals.
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)

    def served_ndcg(
        self, model: SequentialRecommender | SequentialEnsemble, trending_blend: float
    ) -> float:
        """NDCG@k of another model (a champion, say) with its trending blend on this holdout.

        Comparable with the challenger's `sequential+trending` figure: same task, same blend rule.
        """
        scores = _aligned(model, self.task, self.item_ids)
        blended = _blend(scores, self.trending_scores, trending_blend)
        return _ndcg(blended, self.task, self.item_ids, self._k)

    def metric(self, model: str, segment: str = OVERALL, name: str | None = None) -> float:
        column = name or f"ndcg@{self._k}"
        row = self.evaluation[
            (self.evaluation["model"] == model) & (self.evaluation["segment"] == segment)
        ]
        return float(row[column].iloc[0]) if len(row) and column in row else float("nan")

    @property
    def _k(self) -> int:
        columns = [c for c in self.evaluation.columns if c.startswith("ndcg@")]
        return int(columns[0].split("@")[1]) if columns else DEFAULT_TOP_K


def _baselines(train: pd.DataFrame, catalog: pd.Index) -> dict[str, object]:
    models = {
        "popularity": PopularityRecommender(),
        "trending": TrendingRecommender(),
        "item_knn": ItemKNNRecommender(),
    }
    try:
        models["ease"] = EASERecommender().fit(train, catalog_item_ids=catalog)
    except ValueError as error:  # catalogs too large for a dense item-item solve
        logger.warning("EASE skipped: %s", error)
    for name, model in models.items():
        if name != "ease":
            model.fit(train, catalog_item_ids=catalog)
    return models


def _aligned(model, task: EvaluationTask, item_ids: np.ndarray) -> np.ndarray:
    """Scores of a model whose item index may differ from ``item_ids`` (zeros where unknown)."""
    scores = score_task(model.score, task, model.item_ids)
    if np.array_equal(model.item_ids, item_ids):
        return scores
    aligned = np.zeros((scores.shape[0], len(item_ids)))
    columns = pd.Index(model.item_ids).get_indexer(item_ids)
    present = columns >= 0
    aligned[:, present] = scores[:, columns[present]]
    return aligned


def _blend(model_scores: np.ndarray, trending_scores: np.ndarray, weight: float) -> np.ndarray:
    if weight == 0.0:
        return model_scores
    return (1.0 - weight) * rescale_rows(model_scores) + weight * rescale_rows(trending_scores)


def _ndcg(scores: np.ndarray, task: EvaluationTask, item_ids: np.ndarray, k: int) -> float:
    recommendations = recommend_from_scores(scores, task.users, item_ids, task.histories, k)
    return ndcg_at_k(recommendations, task.truth, k)


def compare_with_baselines(
    scores: np.ndarray,
    baseline_scores: dict[str, np.ndarray],
    task: EvaluationTask,
    item_ids: np.ndarray,
    k: int,
) -> pd.DataFrame:
    """Per segment (all users, new users), the challenger's NDCG@k minus each baseline's: the
    mean over the same users, a 95% paired-bootstrap interval, and P(challenger ahead)."""

    def per_user(values: np.ndarray) -> pd.Series:
        lists = recommend_from_scores(values, task.users, item_ids, task.histories, k)
        return ndcg_per_user(lists, task.truth, k)

    challenger = per_user(scores)
    new_users = set(task.segments.loc[task.segments[SEGMENT] == NEW_USER, USER_ID])
    rows = []
    for name, values in baseline_scores.items():
        baseline = per_user(values)
        for segment, keep in ((OVERALL, None), (NEW_USER, new_users)):
            first, second = challenger, baseline
            if keep is not None:
                first = first[first.index.isin(keep)]
                second = second[second.index.isin(keep)]
            difference = paired_bootstrap(first, second)
            rows.append(
                {
                    "baseline": name,
                    "segment": segment,
                    "users": difference.users,
                    f"ndcg@{k} difference": round(difference.mean, 4),
                    "95% interval": f"[{difference.low:+.4f}, {difference.high:+.4f}]",
                    "P(challenger ahead)": round(difference.share_ahead, 3),
                }
            )
    return pd.DataFrame(rows)


def _fit_sequential(
    config: SequentialConfig,
    train: pd.DataFrame,
    catalog: pd.Index,
    text_vectors: pd.DataFrame | None,
    validation: EvaluationTask | None,
    k: int,
    stop_after: int | None = None,
) -> SequentialRecommender:
    model = SequentialRecommender(config)

    def validate(current: SequentialRecommender) -> float:
        assert validation is not None
        item_ids = current.item_ids
        return _ndcg(_aligned(current, validation, item_ids), validation, item_ids, k)

    model.fit(
        train,
        catalog_item_ids=catalog,
        text_vectors=text_vectors if config.use_text else None,
        validate=validate if validation is not None else None,
        stop_after=stop_after,
    )
    return model


def train_and_evaluate(
    splits: pd.DataFrame,
    catalog_item_ids: pd.Series,
    text_vectors: pd.DataFrame | None,
    config: TrainingConfig | None = None,
) -> TrainingResult:
    """Fit baselines and the sequential model on `train`; evaluate all on `validation`.

    ``splits`` holds user_id, item_id, weight, occurred_at and split ('train' / 'validation').
    """
    config = config or TrainingConfig()
    started = time.perf_counter()
    k = config.k
    splits = splits[splits[WEIGHT] > 0]
    train = splits[splits[SPLIT] == "train"]
    holdout = splits[splits[SPLIT] == "validation"]
    if train.empty or holdout.empty:
        raise ValueError(
            f"need interactions on both sides of the split (train {len(train)}, "
            f"validation {len(holdout)}): load more behaviour or lower validation_fraction"
        )
    catalog = pd.Index(sorted(set(catalog_item_ids.astype(str)) | set(splits[ITEM_ID])))
    item_ids = catalog.to_numpy()
    early_train, early_holdout, _ = temporal_split(train, config.early_stopping_fraction)
    early_task = build_task(early_train, early_holdout, config.reveal_fraction)
    task = build_task(train, holdout, config.reveal_fraction)
    logger.info(
        "train %d interactions; holdout %d users (%d new), %d truth items (%d new-item targets)",
        len(train),
        len(task.users),
        int((task.segments["segment"] == "new_user").sum()),
        len(task.truth),
        int(task.truth[ITEM_ID].isin(task.new_items).sum()),
    )

    # Early stopping and the blend weight are chosen inside `train` only.
    logger.info("fitting %s with early stopping on the newest part of train", MAIN_MODEL)
    probe = _fit_sequential(config.sequential, early_train, catalog, text_vectors, early_task, k)
    best_epoch = max(probe.history.best_epoch, 1)
    early_trending = TrendingRecommender().fit(early_train, catalog_item_ids=catalog)
    probe_scores = _aligned(probe, early_task, item_ids)
    early_trending_scores = _aligned(early_trending, early_task, item_ids)
    blend_scores = {
        weight: _ndcg(_blend(probe_scores, early_trending_scores, weight), early_task, item_ids, k)
        for weight in BLEND_CANDIDATES
    }
    trending_blend = max(blend_scores, key=lambda weight: (blend_scores[weight], -weight))
    logger.info("best epoch %d; trending blend %.2f (%s)", best_epoch, trending_blend, blend_scores)

    members = []
    for member in range(config.ensemble_size):
        member_config = replace(config.sequential, seed=config.sequential.seed + member)
        if member == 0 and not config.refit_on_full_train:
            members.append(probe)
            continue
        fit_on = train if config.refit_on_full_train else early_train
        logger.info(
            "fitting %s member %d of %d (seed %d) for %d epochs",
            MAIN_MODEL,
            member + 1,
            config.ensemble_size,
            member_config.seed,
            best_epoch,
        )
        members.append(
            _fit_sequential(
                member_config, fit_on, catalog, text_vectors, None, k, stop_after=best_epoch
            )
        )
    model = members[0] if len(members) == 1 else SequentialEnsemble(members)

    tables = []
    popularity = train.groupby(ITEM_ID)[WEIGHT].sum()
    vectors = (
        dict(zip(text_vectors.index.astype(str), text_vectors.to_numpy(), strict=True))
        if text_vectors is not None
        else None
    )

    is_new = ~np.isin(item_ids, train[ITEM_ID].unique())

    def add(name: str, scores: np.ndarray, new_item_slots: int = 0) -> None:
        tables.append(
            evaluate_scores(
                name,
                scores,
                task,
                item_ids,
                k,
                item_popularity=popularity,
                item_vectors=vectors,
                is_new=is_new,
                new_item_slots=new_item_slots,
            )
        )

    baselines = _baselines(train, catalog)
    baseline_scores = {name: _aligned(fitted, task, item_ids) for name, fitted in baselines.items()}
    for name, scores in baseline_scores.items():
        add(name, scores)
    main_scores = _aligned(model, task, item_ids)
    add(MAIN_MODEL, main_scores)
    trending_scores = _aligned(baselines["trending"], task, item_ids)
    blended = _blend(main_scores, trending_scores, trending_blend)
    add(BLENDED_MODEL, blended)
    add(SERVED_MODEL, blended, config.new_item_slots)
    if config.ablations:
        # The ablations are single models: compare them with one member of the ensemble.
        if len(members) > 1:
            one = _blend(_aligned(members[0], task, item_ids), trending_scores, trending_blend)
            add(ONE_MEMBER_MODEL, one, config.new_item_slots)
        for name, variant in (
            ("sequential_id_only", replace(config.sequential, use_text=False)),
            ("sequential_text_only", replace(config.sequential, use_ids=False)),
        ):
            if text_vectors is None and variant.use_text:
                continue
            logger.info("training ablation %s for %d epochs", name, best_epoch)
            fit_on = train if config.refit_on_full_train else early_train
            ablation = _fit_sequential(
                variant, fit_on, catalog, text_vectors, None, k, stop_after=best_epoch
            )
            ablation_scores = _blend(
                _aligned(ablation, task, item_ids), trending_scores, trending_blend
            )
            add(name, ablation_scores, config.new_item_slots)

    evaluation = pd.concat(tables, ignore_index=True)
    comparisons = compare_with_baselines(blended, baseline_scores, task, item_ids, k)
    logger.info("%s against each baseline (paired bootstrap):\n%s", BLENDED_MODEL, comparisons)
    return TrainingResult(
        model=model,
        trending_blend=trending_blend,
        evaluation=evaluation,
        epochs=probe.history.epochs,
        best_epoch=best_epoch,
        data_summary={
            "train_interactions": len(train),
            "validation_interactions": len(holdout),
            "train_users": int(train["user_id"].nunique()),
            "catalog_items": len(catalog),
            "train_end": str(train["occurred_at"].max()),
            "validation_start": str(holdout["occurred_at"].min()),
            "validation_end": str(holdout["occurred_at"].max()),
            "evaluated_users": len(task.users),
            "new_item_targets": int(task.truth[ITEM_ID].isin(task.new_items).sum()),
        },
        seconds=time.perf_counter() - started,
        task=task,
        item_ids=item_ids,
        trending_scores=trending_scores,
        comparisons=comparisons,
    )
