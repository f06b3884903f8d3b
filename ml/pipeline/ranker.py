"""The learned ranker: gradient-boosted trees (LightGBM), trained listwise, over candidate features.

The ranker is a bag of models whose scores are averaged, and by default the bag mixes two
objectives: LambdaRank and XE-NDCG (LightGBM's `rank_xendcg`, a cross-entropy bound on NDCG),
two models of each. Alone, XE-NDCG trained in 0.67x to 0.79x the time and ranked best on the
MovieLens sample, but on a synthetic log it reached no new item at all; together they ranked
better than LambdaRank alone on all four sets of backtests measured, overall and for new users
(23 of the 24 cut-and-segment figures), and found new items about as often (README, "The
ranker's objective"; benchmarks/ranker_objective.py).

LightGBM trains it. Serving, which scores every candidate of every user, predicts with the same
trees compiled to native code by lleaves (LLVM): the same scores to about 1e-14, several times
faster than LightGBM's own loop (benchmarks/ranker_predict.py). Compiled trees are cached on
disk by the model's hash, so a process that loads a known ranker compiles nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.constants import USER_ID

logger = logging.getLogger("freshrank.ranker")

WEIGHT = "_training_weight"

LABEL = "label"


@dataclass(frozen=True)
class RankerConfig:
    """LightGBM ranking settings: small, regularised trees (a few hundred labelled users per
    cut), several bagged seeds averaged to steady them."""

    # LightGBM ranking objectives joined by "+": the bagged models take them in turn.
    objective: str = "lambdarank+rank_xendcg"
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 7
    min_child_samples: int = 40
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    seed: int = 7
    bagged_models: int = 4  # models from different seeds (and objectives), scores averaged
    # Above this many candidate rows, training keeps every chosen item and a seeded sample of
    # the rest: a large log's backtests would otherwise make training cost follow the log.
    max_rows: int = 200_000
    # One thread: LightGBM's two-thread runs slow down many times over when anything else
    # shares the two cores, and one thread is nearly as fast on data this size.
    threads: int = 1
    # Prediction is one parallel loop over a block's candidate rows: it takes every core the
    # process may use (0: OpenMP's default, which follows OMP_NUM_THREADS, as Ray sets for its
    # workers). Measured with a busy process beside it, two threads were still no slower.
    predict_threads: int = 0

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(self.objective.split("+"))


class Ranker:
    """Scores candidates by how likely the user is to pick them next, trained per user group.

    A fitted ranker is its models' text (LightGBM's model format): what is saved, what the
    compiled trees are built from, and what LightGBM boosters are loaded from when they are
    needed. A process that predicts with compiled trees never imports LightGBM (over a second,
    with scikit-learn, of every cold refresh).
    """

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config or RankerConfig()
        self.features: list[str] = []
        self._texts: list[str] = []  # each bagged model as LightGBM model text
        self._boosters: list | None = None  # lightgbm.Booster of each text, once loaded
        self._compiled: list | None = None  # lleaves models of each text, once compiled

    def __getstate__(self) -> dict:
        # The texts travel; boosters and compiled trees are rebuilt from them where needed.
        state = self.__dict__.copy()
        state["_boosters"] = None
        state["_compiled"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        if "_texts" not in state:  # saved before the texts: a list of fitted LGBMRankers
            models = state.pop("models", [])
            state["_texts"] = [model.booster_.model_to_string() for model in models]
            state.setdefault("_boosters", None)
            state.setdefault("_compiled", None)
        self.__dict__.update(state)

    @property
    def fitted(self) -> bool:
        return bool(self._texts)

    @property
    def models(self) -> list:
        """The bagged models as LightGBM boosters (loaded from their text on first use)."""
        if self._boosters is None:
            import lightgbm

            self._boosters = [lightgbm.Booster(model_str=text) for text in self._texts]
        return self._boosters

    def fit(
        self, frame: pd.DataFrame, features: list[str], weights: np.ndarray | None = None
    ) -> Ranker:
        """Learn from candidate rows with a 0/1 `label`, optionally weighted per row (the same
        weight within a user); users without a positive are dropped (a group with nothing to
        find teaches a listwise objective nothing)."""
        import lightgbm

        frame = frame.assign(**{WEIGHT: 1.0 if weights is None else np.asarray(weights)})
        useful = frame.groupby(USER_ID)[LABEL].transform("max") > 0
        frame = frame[useful]
        if frame.empty:
            raise ValueError("no user has a candidate they went on to choose: nothing to learn")
        frame = within_budget(frame, self.config.max_rows, self.config.seed)
        frame = frame.sort_values(USER_ID, kind="stable")
        groups = frame.groupby(USER_ID, sort=False).size().to_numpy()
        values = frame[features].to_numpy(dtype=np.float32)
        labels, weights = frame[LABEL].to_numpy(), frame[WEIGHT].to_numpy()
        config = self.config

        def member(number: int):
            model = lightgbm.LGBMRanker(
                objective=config.objectives[number % len(config.objectives)],
                n_estimators=config.n_estimators,
                learning_rate=config.learning_rate,
                num_leaves=config.num_leaves,
                min_child_samples=config.min_child_samples,
                subsample=config.subsample,
                subsample_freq=1,
                colsample_bytree=config.colsample_bytree,
                random_state=config.seed + number,
                n_jobs=config.threads,
                deterministic=True,
                force_row_wise=True,
                verbose=-1,
            )
            model.fit(values, labels, group=groups, sample_weight=weights)
            return model.booster_

        # The bagged models are independent: one thread each (LightGBM leaves Python while it
        # trains), as many at once as there are cores. Each model is single-threaded, so a
        # busy neighbour slows them down in proportion, not many times over as OpenMP does.
        workers = min(config.bagged_models, len(os.sched_getaffinity(0)))
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            boosters = list(pool.map(member, range(config.bagged_models)))
        self.features = list(features)
        self._boosters = boosters
        self._texts = [booster.model_to_string() for booster in boosters]
        self._compiled = None
        return self

    def compile(self, cache_dir: Path) -> bool:
        """Predict with the trees compiled by lleaves from now on; the compiled code is kept
        in ``cache_dir`` (by model hash) for the next process. False, and LightGBM goes on
        predicting, where lleaves is not installed or cannot compile on this platform."""
        if self._compiled is not None:
            return True
        if not self.fitted:
            return False
        try:
            import lleaves
        except ImportError:
            logger.info("lleaves is not installed: LightGBM predicts")
            return False
        cache_dir.mkdir(parents=True, exist_ok=True)
        compiled = []
        try:
            for text in self._texts:
                key = hashlib.sha256(text.encode()).hexdigest()[:32]
                model_file = _written(cache_dir / f"{key}.txt", text)
                native = lleaves.Model(model_file=str(model_file))
                object_file = cache_dir / f"{key}.o"
                if object_file.exists():
                    native.compile(cache=str(object_file))
                else:
                    # Compiled beside, then moved in whole: another process never loads half.
                    staging = cache_dir / f".{key}.{os.getpid()}.o"
                    native.compile(cache=str(staging))
                    os.replace(staging, object_file)
                compiled.append(native)
        except Exception as error:  # noqa: BLE001 - LLVM's failures have no common type
            logger.warning("lleaves could not compile the ranker (%s): LightGBM predicts", error)
            return False
        self._compiled = compiled
        return True

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError("the ranker is not fitted yet")
        threads = getattr(self.config, "predict_threads", 0)  # rankers saved before it: 0
        # Single precision, as the trees were trained: a value must fall on the same side of
        # a split whichever code predicts.
        values = frame.reindex(columns=self.features).to_numpy(dtype=np.float32)
        compiled = self._compiled
        if compiled is not None:
            values = np.ascontiguousarray(values, dtype=np.float64)
            jobs = threads or len(os.sched_getaffinity(0))
            return np.mean([model.predict(values, n_jobs=jobs) for model in compiled], axis=0)
        return np.mean(
            [model.predict(values, num_threads=threads) for model in self.models], axis=0
        )

    def importance(self) -> pd.Series:
        """Total gain per feature, largest first: what the ranker leans on."""
        if not self.fitted:
            return pd.Series(dtype=float)
        gains = np.mean(
            [model.feature_importance(importance_type="gain") for model in self.models], axis=0
        )
        return pd.Series(gains, index=self.features).sort_values(ascending=False)

    def params(self) -> dict[str, object]:
        return asdict(self.config)


def within_budget(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most about ``max_rows`` rows: every positive, and the same seeded share of each
    user's negatives (row order kept). Negatives are what there are many of; the ranker still
    sees every chosen item against a sample of what was passed over."""
    if len(frame) <= max_rows:
        return frame
    positive = frame[LABEL].to_numpy() > 0
    negatives = int((~positive).sum())
    share = max(max_rows - int(positive.sum()), 0) / max(negatives, 1)
    keep = positive | (np.random.default_rng(seed).random(len(frame)) < share)
    return frame[keep]


def _written(path: Path, text: str) -> Path:
    """``path`` holding ``text``, written beside and moved in whole unless already there."""
    if not path.exists():
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(text)
        os.replace(staging, path)
    return path
