"""The one ranking pipeline: candidates -> features -> ranker -> rules -> new-item slots -> MMR ->
reason. Evaluation, the MLflow model and the published lists all call `RankingPipeline.recommend`.

A pipeline is fitted in two steps: its sources on a snapshot (cheap, and redone whenever the
snapshot moves: serving refits them on the newest marts), and, when it orders by the learned
ranker, the ranker on labelled candidate frames from earlier cuts (see ml.pipeline.backtest).
A pipeline may instead order by one source's score (`ordering="item_knn"`, say): that is how each
baseline competes through exactly the same rules, slots and reasons as the ranker. A ranker may
also be fused with one baseline (`partner`): its order and the baseline's are merged by weighted
reciprocal rank, which keeps the learned order close to the strongest simple one when what the
ranker learned from earlier cuts fits the newest behaviour less well (see `fused_scores`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ml.constants import (
    DEFAULT_CANDIDATE_SOURCES,
    DEFAULT_CONTEXT_KEY,
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_TOP_K,
    ITEM_ID,
    RANK,
    REASON,
    SCORE,
    USER_ID,
)
from ml.pipeline.features import (
    RANKED_SOURCE_COLUMNS,
    USER_SHARE_COLUMNS,
    columns_frame,
    context_popularity,
    feature_columns,
    item_features,
    popularity_shares,
    ranks_within,
    source_ranks,
    trend_features,
    user_contexts,
    user_features,
    user_shares,
)
from ml.pipeline.ranker import Ranker
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.pipeline.sources import (
    SOURCES,
    CandidateSource,
    CoVisitationSource,
    MergedScores,
    PopularitySource,
    SequentialSourceConfig,
    TextNeighbourSource,
    merged_scores,
    run_starts,
    top_per_run_mask,
)
from ml.ranking import comparable_scores
from ml.rules import (
    RankingRules,
    context_trending,
    display_titles,
    excluded_at,
    feedback_multipliers_at,
    mmr_rerank,
)

logger = logging.getLogger("freshrank.pipeline")

RANKER = "ranker"
FUSED_WITH = "+"  # "ranker+popularity_last_10000": the ranker fused with that baseline
# Reciprocal-rank fusion: a candidate scores 1 / (FUSION_K + its rank by the ranker) plus
# PARTNER_WEIGHT / (FUSION_K + its rank by the partner). 60 is the constant of the original
# method (Cormack et al., 2009); the ranker counts twice the partner (weights 0.25, 0.5 and 1
# were measured on three builds of the sample; README, "Fusing the ranker with a baseline").
FUSION_K = 60.0
PARTNER_WEIGHT = 0.5
DEFAULT_SOURCES = DEFAULT_CANDIDATE_SOURCES
TIEBREAK = "popularity_all"
LIST_COLUMNS = (USER_ID, RANK, ITEM_ID, SCORE, REASON)
REASON_BECAUSE = "because you viewed {title}"
REASON_SIMILAR = "similar to {title}"
REASON_NEW = "new: similar to {title}"
REASON_POPULAR = "popular now"
SIMILAR_REASON_MIN_COSINE = 0.5
RELATED_ITEM_ID = "related_item_id"
RELATED_COLUMNS = (ITEM_ID, RANK, RELATED_ITEM_ID, SCORE, REASON)
REASON_VIEWED_TOGETHER = "often viewed together"
REASON_SIMILAR_TEXT = "similar text"
RELATED_QUERY_BLOCK = 4_096  # items whose own vectors are searched at once
RELATED_MAX_SKIPPED = 1_000  # unavailable neighbours a text search reaches past, at most


class Candidates(NamedTuple):
    """A block's candidates: the pairs with every source's score, and integer codes of their
    users and items (what the features group and look up by, rather than text ids)."""

    pairs: pd.DataFrame  # user_id, item_id, score columns; sorted by user and item
    user_codes: np.ndarray  # each row's user, ascending
    item_codes: np.ndarray  # each row's item, a position in ``items``
    items: pd.Series  # the distinct items, in id order


@dataclass(frozen=True)
class PipelineConfig:
    """Which sources run, how many candidates each gives, and the list rules."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    k: int = DEFAULT_TOP_K
    candidates_per_source: int = 50
    history_length: int = DEFAULT_HISTORY_LENGTH
    new_item_slots: int = 1
    rules: RankingRules = field(default_factory=RankingRules)
    context_key: str = DEFAULT_CONTEXT_KEY
    users_per_block: int = 1_000
    sequential: SequentialSourceConfig = field(default_factory=SequentialSourceConfig)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown candidate sources {unknown}; known: {sorted(SOURCES)}")
        if "popularity" not in self.sources:
            raise ValueError("the popularity source is required: it is every user's fallback")


def empty_lists() -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: pd.Series(dtype=object),
            RANK: pd.Series(dtype="int64"),
            ITEM_ID: pd.Series(dtype=object),
            SCORE: pd.Series(dtype=float),
            REASON: pd.Series(dtype=object),
        }
    )


class RankingPipeline:
    """Fitted sources (and optionally a ranker) that turn users' behaviour into top-k lists."""

    partner: str | None = None  # pipelines saved before fusion existed have none

    def __init__(
        self,
        config: PipelineConfig | None = None,
        ordering: str = RANKER,
        partner: str | None = None,
    ) -> None:
        if partner is not None and ordering != RANKER:
            raise ValueError(f"only the ranker is fused with a baseline, not {ordering!r}")
        self.config = config or PipelineConfig()
        self.ordering = ordering
        self.partner = partner
        self.sources: dict[str, CandidateSource] = {}
        self.ranker: Ranker | None = None
        self.as_of: pd.Timestamp | None = None
        self._snapshot: Snapshot | None = None
        self._context_scores: dict[str, pd.Series] = {}

    # --- fitting -------------------------------------------------------------------------
    def _new_source(self, name: str) -> CandidateSource:
        if name == "sequential":
            return SOURCES[name](self.config.sequential)
        if name == "text":
            # More than the merge keeps: the extra neighbours give other sources' candidates a
            # text rank.
            return TextNeighbourSource(per_user=4 * self.config.candidates_per_source)
        if name == "popularity":
            # Exactly what the merge keeps (each window's best): the windows' values are set
            # for every candidate after the merge, so more would only widen the users x items
            # frame the merge starts from.
            return PopularitySource(per_user=self.config.candidates_per_source)
        return SOURCES[name]()

    def fit_sources(
        self, snapshot: Snapshot, keep: dict[str, CandidateSource] | None = None
    ) -> RankingPipeline:
        """Fit every source on the snapshot (the ranker, if any, is kept; so are `keep`'s)."""
        self.sources = {}
        for name in self.config.sources:
            if keep and name in keep:
                self.sources[name] = keep[name]
            else:
                self.sources[name] = self._new_source(name).fit(snapshot)
        self._snapshot = snapshot
        self.as_of = snapshot.as_of
        item_ids = snapshot.item_ids
        by_context = context_trending(
            snapshot.positive, item_ids, self.config.context_key, min_events=1
        )
        self._context_scores = {
            value: pd.Series(scores / scores.max(), index=item_ids)
            for value, scores in by_context.items()
            if scores.max() > 0
        }
        return self

    def refreshed(self, snapshot: Snapshot) -> RankingPipeline:
        """This pipeline on a newer snapshot: counting sources refit, trained parts kept.

        Serving calls this with the newest marts, so item statistics, co-visitation and the
        vector index follow behaviour loaded since the build without retraining the ranker.
        """
        if self._snapshot is not None and _same_state(self._snapshot, snapshot):
            return self  # nothing new since the sources were fitted (a publish right after a build)
        other = RankingPipeline(self.config, self.ordering, self.partner)
        other.ranker = self.ranker
        trained = {
            name: source.learn_catalog(snapshot)
            for name, source in self.sources.items()
            if not source.refit_when_serving and hasattr(source, "learn_catalog")
        }
        other.fit_sources(snapshot, keep=trained)
        return other

    def with_ordering(
        self, ordering: str, ranker: Ranker | None = None, partner: str | None = None
    ) -> RankingPipeline:
        """The same fitted sources, ordered by another column (or another ranker, fused with
        ``partner`` when given)."""
        other = RankingPipeline(self.config, ordering, partner)
        other.sources, other._snapshot, other.as_of = self.sources, self._snapshot, self.as_of
        other._context_scores = self._context_scores
        other.ranker = ranker if ranker is not None else self.ranker
        return other

    def __getstate__(self) -> dict:
        # Saved (MLflow, the serving state, Ray workers) without the snapshot's events: serving
        # reads users' behaviour from the warehouse, so a saved pipeline follows the catalog.
        state = self.__dict__.copy()
        if self._snapshot is not None:
            state["_snapshot"] = self._snapshot.summary()
        return state

    def forget_events(self) -> RankingPipeline:
        """Keep only the summary of the snapshot (what ranking reads of it; see
        Snapshot.summary): a backtest holds a fitted pipeline per cut, and their events would
        otherwise stay in memory all at once."""
        if self._snapshot is not None:
            self._snapshot = self._snapshot.summary()
        return self

    def compile_ranker(self, cache_dir: Path) -> bool:
        """Predict with the ranker's trees compiled to native code (Ranker.compile) where this
        pipeline orders by its ranker: serving scores every user's candidates with it."""
        ranker = self.ranker
        if self.ordering != RANKER or ranker is None or not ranker.fitted:
            return False
        return ranker.compile(cache_dir)

    @property
    def name(self) -> str:
        """What the backtests, MLflow and the serving label call this pipeline."""
        return self.ordering if self.partner is None else f"{RANKER}{FUSED_WITH}{self.partner}"

    @property
    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            raise RuntimeError("fit_sources(snapshot) has not run")
        return self._snapshot

    @property
    def score_columns(self) -> tuple[str, ...]:
        return tuple(column for source in self.sources.values() for column in source.columns)

    # --- candidates and features ----------------------------------------------------------
    def candidate_features(self, behaviour: Behaviour) -> pd.DataFrame:
        """One row per (user, candidate) with every feature; consumed and unavailable items
        never become candidates."""
        parts = [self._block_features(block) for block in self._blocks(behaviour)]
        if not parts:
            return pd.DataFrame(columns=[USER_ID, ITEM_ID])
        return pd.concat(parts, ignore_index=True)

    def _blocks(self, behaviour: Behaviour) -> Iterator[Behaviour]:
        """The users in blocks of `users_per_block`: every step of ranking is per user, so
        working a block at a time bounds memory by a block's candidates, not everyone's."""
        return behaviour.blocks(self.config.users_per_block)

    def _block_features(self, block: Behaviour, recent: pd.DataFrame | None = None) -> pd.DataFrame:
        """The block's candidate frame: gathered as arrays, in the frame's column order, and
        made a frame once (a column at a time, pandas copies the growing frame over and over).
        ``recent``: the block's recent_items(history_length), when the caller has them."""
        snapshot = self.snapshot
        if recent is None:
            recent = block.recent_items(self.config.history_length)
        columns = self.score_columns
        pairs, users, codes, distinct = self._candidates(block, recent)
        frame = {column: pairs[column].to_numpy() for column in pairs.columns}
        popularity: PopularitySource = self.sources["popularity"]
        windows = popularity.item_features(distinct)
        frame.update({column: windows[column].to_numpy()[codes] for column in popularity.columns})
        frame.update(popularity_shares(frame, popularity.window_totals()))
        ranked = tuple(c for c in RANKED_SOURCE_COLUMNS if c in columns)
        frame.update(source_ranks(frame, ranked, users))
        frame.update(
            user_shares(frame, tuple(c for c in USER_SHARE_COLUMNS if c in columns), users)
        )
        text = self.sources.get("text")
        if isinstance(text, TextNeighbourSource):
            similarity = text.pair_similarity(pairs[[USER_ID, ITEM_ID]], recent)
            frame["text"] = similarity["text"].fillna(0.0).to_numpy()
            frame["text_mean"] = similarity["text_mean"].to_numpy()
            frame["text_max"] = similarity["text_max"].to_numpy()
        items = item_features(snapshot, distinct)
        frame.update({column: items[column].to_numpy()[codes] for column in items.columns})
        per_user = user_features(block, snapshot.as_of)
        rows = per_user.index.get_indexer(frame[USER_ID])
        frame.update({column: per_user[column].to_numpy()[rows] for column in per_user.columns})
        frame["context_popularity"] = context_popularity(
            pairs, user_contexts(block, self.config.context_key), self._context_scores
        )
        frame.update(trend_features(frame))
        return columns_frame(frame)

    def _candidates(self, block: Behaviour, recent: pd.DataFrame) -> Candidates:
        """(user, item, every source's score) of each user's candidates, sorted by user and item:
        the `candidates_per_source` best of every per-user source's columns, and popularity's best
        items for everyone, less the consumed, purchased and unavailable items the rules
        exclude. A per-user score is 0 where that source did not offer the item; popularity's
        columns are 0 here (every candidate gets them afterwards)."""
        popularity: PopularitySource = self.sources["popularity"]
        personal = [source for source in self.sources.values() if source is not popularity]
        personal_columns = tuple(column for source in personal for column in source.columns)
        popular = popularity.best_items(self.config.candidates_per_source)
        everyone = pd.DataFrame(
            {
                USER_ID: np.repeat(block.users, len(popular)),
                ITEM_ID: np.tile(popular, len(block.users)),
            }
        )
        parts = [source.scores(block, recent) for source in personal]
        merged = merged_scores([*parts, everyone], self.score_columns)
        # Chosen on the merge's integer codes; text ids are made only for the rows kept.
        keep = top_per_run_mask(
            merged.user_codes,
            [merged.column(column) for column in personal_columns],
            self.config.candidates_per_source,
        )
        items = pd.Index(merged.items)
        keep |= np.isin(merged.item_codes, items.get_indexer(popular))
        rows = np.flatnonzero(keep)
        rows = rows[~self._excluded(merged, rows, items, block)]
        # The kept items renumbered 0.. in id order.
        present = np.zeros(len(items), dtype=bool)
        present[merged.item_codes[rows]] = True
        codes = (np.cumsum(present) - 1)[merged.item_codes[rows]]
        distinct = pd.Series(merged.items[present], dtype=object)
        return Candidates(merged.frame(rows), merged.user_codes[rows], codes, distinct)

    def _excluded(
        self, merged: MergedScores, rows: np.ndarray, items: pd.Index, block: Behaviour
    ) -> np.ndarray:
        """Which of the merge's ``rows`` are consumed, purchased or unavailable items, as the
        rules say (``items``: the merge's items as an index)."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        return excluded_at(
            block.events,
            pd.Index(merged.users),
            items,
            merged.user_codes[rows],
            merged.item_codes[rows],
            self.config.rules,
            self.snapshot.unavailable,
        )

    # --- ranking --------------------------------------------------------------------------
    def order_scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Each candidate's score in [0, 1] per user under this pipeline's ordering."""
        if frame.empty:
            return np.zeros(0)
        if self.ordering == RANKER:
            if self.ranker is None or not self.ranker.fitted:
                raise RuntimeError("this pipeline orders by the ranker, which is not trained")
            raw = self.ranker.predict(frame)
            if self.partner is not None:
                users = pd.factorize(frame[USER_ID])[0]
                raw = fused_scores(raw, _baseline_order(frame, self.partner), users)
        else:
            raw = _baseline_order(frame, self.ordering)
        grouped = pd.Series(raw).groupby(frame[USER_ID].to_numpy())
        low, high = grouped.transform("min").to_numpy(), grouped.transform("max").to_numpy()
        span = np.where(high > low, high - low, 1.0)
        # Lowest candidate at 0.1, not 0, so that a demotion can still move it.
        return 0.1 + 0.9 * np.clip((raw - low) / span, 0.0, 1.0)  # clip: rounding

    def rank(
        self,
        frame: pd.DataFrame,
        behaviour: Behaviour,
        reasons: bool = True,
        multipliers: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Top-k lists from a candidate frame: order, feedback rules, new-item slots, MMR,
        reasons (empty without ``reasons``: evaluation needs only the order). Users without
        candidates get no rows. ``multipliers``: feedback_multipliers(frame, behaviour), when
        the caller ranks the same frame under several orderings (they do not depend on it)."""
        if frame.empty:
            return empty_lists()
        lists = self._top(self._scored(frame, behaviour, multipliers))
        lists[REASON] = self._reasons(lists, behaviour) if reasons else ""
        return lists[list(LIST_COLUMNS)]

    def recommend_with_candidates(
        self, behaviour: Behaviour, candidates: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(recommend's lists, each user's `candidates` best-scored candidates with a rank,
        score and reason): the pool request-time personalisation re-ranks when the user's
        newest events remove or promote items. A listed candidate keeps its list's reason."""
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1; got {candidates}")
        blocks = self._blocks(behaviour)
        parts = [self._block_with_candidates(block, candidates) for block in blocks]
        if not parts:
            return empty_lists(), empty_lists()
        lists, pools = zip(*parts, strict=True)
        return pd.concat(lists, ignore_index=True), pd.concat(pools, ignore_index=True)

    def _block_with_candidates(
        self, block: Behaviour, candidates: int
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """recommend_with_candidates for one block of users."""
        recent = block.recent_items(self.config.history_length)
        frame = self._block_features(block, recent)
        if frame.empty:
            return empty_lists(), empty_lists()
        scored = self._scored(frame, block)
        lists = self._top(scored)
        pool = scored.groupby(USER_ID, sort=False).head(candidates)[[USER_ID, ITEM_ID, SCORE]]
        pool[RANK] = pool.groupby(USER_ID, sort=False).cumcount() + 1
        listed = pool.set_index([USER_ID, ITEM_ID]).index.isin(
            lists.set_index([USER_ID, ITEM_ID]).index
        )
        # One pass of reasons over every row either table shows (it costs per user, not row).
        shown = pd.concat([lists, pool[~listed]], ignore_index=True)
        shown[REASON] = self._reasons(shown, block, recent)
        reasons = shown.set_index([USER_ID, ITEM_ID])[REASON]
        lists[REASON] = shown[REASON].to_numpy()[: len(lists)]
        pool[REASON] = reasons.reindex(
            pd.MultiIndex.from_frame(pool[[USER_ID, ITEM_ID]])
        ).to_numpy()
        return lists[list(LIST_COLUMNS)], pool[list(LIST_COLUMNS)].reset_index(drop=True)

    def _scored(
        self, frame: pd.DataFrame, behaviour: Behaviour, multipliers: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Every candidate's final score (order score x feedback multipliers), best first per
        user; scores equal to SCORE_DECIMALS places tie and go to the smaller item_id, so float
        noise cannot reorder a list (comparable_scores)."""
        scored = frame[[USER_ID, ITEM_ID, "item_is_new"]].copy()
        scored[SCORE] = comparable_scores(
            self.order_scores(frame)
            * (self.feedback_multipliers(frame, behaviour) if multipliers is None else multipliers)
        )
        # By user, best score first, then item: one sort of integer codes that keep the ids'
        # order (sorting the text columns themselves cost several times more).
        users = pd.factorize(scored[USER_ID], sort=True)[0]
        items = pd.factorize(scored[ITEM_ID], sort=True)[0]
        return scored.iloc[np.lexsort((items, -scored[SCORE].to_numpy(), users))]

    def _top(self, scored: pd.DataFrame) -> pd.DataFrame:
        """Top-k lists from _scored's rows: new-item slots, MMR and ranks (no reasons yet)."""
        config = self.config
        diversify = config.rules.mmr_lambda is not None and "text" in self.sources
        width = max(5 * config.k, 50) if diversify else config.k
        lists = _top_with_new_items(scored, width, config.new_item_slots)
        if diversify:
            lists = self._diversify(lists, config.k, config.rules.mmr_lambda)
        lists = lists.copy().reset_index(drop=True)
        lists[RANK] = lists.groupby(USER_ID, sort=False).cumcount() + 1
        return lists

    def recommend(self, behaviour: Behaviour) -> pd.DataFrame:
        """Top-k lists for every user of `behaviour`: the one path evaluation and serving take."""
        parts = [self.rank(self._block_features(block), block) for block in self._blocks(behaviour)]
        return pd.concat(parts, ignore_index=True) if parts else empty_lists()

    def cold_start_list(self) -> pd.DataFrame:
        """The list for someone with no behaviour at all (user_id "*")."""
        nobody = Behaviour(_no_events(), users=np.array(["*"], dtype=object))
        return self.recommend(nobody)

    def feedback_multipliers(self, frame: pd.DataFrame, behaviour: Behaviour) -> np.ndarray:
        """Feedback demotions (ignored impressions, clicks without conversion, dislikes) of
        each candidate row, computed at the candidates' cells only."""
        events = behaviour.events[behaviour.events[USER_ID].isin(pd.unique(frame[USER_ID]))]
        if events.empty:
            return np.ones(len(frame))
        users = pd.Index(pd.unique(frame[USER_ID]))
        # The users' own items too: a disliked item is consumed, so rarely a candidate, and the
        # penalty must see it whoever else is ranked in the same call (block, or shard on Ray).
        items = pd.Index(
            pd.unique(np.concatenate([frame[ITEM_ID].to_numpy(), events[ITEM_ID].to_numpy()]))
        )
        text = self.sources.get("text")
        vectors = None
        if isinstance(text, TextNeighbourSource) and text.index is not None:
            vectors = text.vectors_of  # asked for the few items negative feedback compares
        return feedback_multipliers_at(
            events,
            users,
            items,
            users.get_indexer(frame[USER_ID]),
            items.get_indexer(frame[ITEM_ID]),
            self.config.rules,
            vectors,
        )

    def _diversify(self, lists: pd.DataFrame, k: int, mmr_lambda: float) -> pd.DataFrame:
        text: TextNeighbourSource = self.sources["text"]
        users = pd.Index(pd.unique(lists[USER_ID]))
        items = pd.Index(pd.unique(lists[ITEM_ID]))
        values = np.full((len(users), len(items)), -np.inf)
        values[users.get_indexer(lists[USER_ID]), items.get_indexer(lists[ITEM_ID])] = lists[SCORE]
        picks = mmr_rerank(values, text.vectors_of(items), k, mmr_lambda)
        rows = []
        for row, user in enumerate(users):
            picked = [column for column in picks[row] if column >= 0]
            scores = np.minimum.accumulate(values[row, picked]) if picked else []
            for column, score in zip(picked, scores, strict=True):
                rows.append((user, items[column], float(score)))
        return pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, SCORE])

    def _reasons(
        self, lists: pd.DataFrame, behaviour: Behaviour, recent: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Why each listed item is there, naming one of the user's recent items when possible
        (``recent``: the behaviour's recent_items(history_length), when the caller has them)."""
        reasons = np.full(len(lists), REASON_POPULAR, dtype=object)
        if lists.empty:
            return reasons
        titles = self.snapshot.titles
        listed = pd.unique(lists[USER_ID])
        if recent is None:
            recent = behaviour.for_users(listed).recent_items(self.config.history_length)
        else:  # a user's recent items do not depend on whoever else is in the behaviour
            recent = recent[recent[USER_ID].isin(listed)].reset_index(drop=True)
        pairs = lists[[USER_ID, ITEM_ID]].reset_index(drop=True)
        new_items = ~pairs[ITEM_ID].isin(self.snapshot.first_seen.index).to_numpy()
        because = np.full(len(pairs), None, dtype=object)
        covisitation = self.sources.get("covisitation")
        if isinstance(covisitation, CoVisitationSource) and not recent.empty:
            contributions = covisitation.contributions(recent, pairs)
            because = _strongest_source(contributions, pairs)
        similar, cosine = _most_similar_recent(self.sources.get("text"), pairs, recent)
        similar = np.asarray(similar, dtype=object)
        has_similar = np.array([item is not None for item in similar], dtype=bool)
        has_because = np.array([isinstance(item, str) for item in because], dtype=bool)
        # First rule that applies wins: new item, then co-visited, then similar enough by text.
        new_reason = new_items & has_similar
        because_reason = ~new_reason & has_because
        similar_reason = (
            ~new_reason & ~because_reason & has_similar & (cosine >= SIMILAR_REASON_MIN_COSINE)
        )
        for chosen, template, named in (
            (new_reason, REASON_NEW, similar),
            (because_reason, REASON_BECAUSE, because),
            (similar_reason, REASON_SIMILAR, similar),
        ):
            rows = np.flatnonzero(chosen)
            for row, title in zip(rows, display_titles(named[rows], titles), strict=True):
                reasons[row] = template.format(title=title)
        return reasons

    # --- related items ---------------------------------------------------------------------
    def related_items(self, k: int) -> pd.DataFrame:
        """Each item's k best related items (item_id, rank, related_item_id, score, reason).

        Co-visited items come first, scored 0.5 + 0.5 * weight / the item's strongest weight
        (all-time weights, `covisitation_all`), so in (0.5, 1]; text neighbours of the item's
        own vector follow, scored 0.5 * cosine, so in (0, 0.5] (neighbours with cosine <= 0 are
        not related). An item both co-visited and a neighbour keeps its co-visitation row. Text
        neighbours are what reach brand-new items. Unavailable items and the item itself are
        never listed; ties go to the smaller item id.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1; got {k}")
        unavailable = self.snapshot.unavailable
        parts = [_empty_related()]
        covisitation = self.sources.get("covisitation")
        if isinstance(covisitation, CoVisitationSource) and not covisitation.related.empty:
            parts.append(_covisited_related(covisitation.related, unavailable))
        text = self.sources.get("text")
        if isinstance(text, TextNeighbourSource) and text.index is not None:
            parts.append(_text_related(text, k, unavailable))
        related = pd.concat(parts, ignore_index=True)
        related = related.sort_values(
            [ITEM_ID, SCORE, RELATED_ITEM_ID], ascending=[True, False, True], kind="stable"
        )
        related = related.drop_duplicates([ITEM_ID, RELATED_ITEM_ID])
        related = related.groupby(ITEM_ID, sort=False).head(k).copy()
        related[RANK] = related.groupby(ITEM_ID, sort=False).cumcount() + 1
        return related[list(RELATED_COLUMNS)].reset_index(drop=True)

    # --- training data ---------------------------------------------------------------------
    def training_columns(self, frame: pd.DataFrame) -> list[str]:
        return feature_columns(frame.drop(columns=["label"], errors="ignore"))


def _baseline_order(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A single-source pipeline's raw order: the source's score, then baseline_tiebreak (every
    scored candidate above every unscored one)."""
    if column not in frame:
        raise ValueError(f"no score column {column!r} among the candidates")
    scores = frame[column].to_numpy(dtype=float)
    tiebreak = baseline_tiebreak(frame) * 1e-3
    return np.where(scores > 0, scores * 2.0 + tiebreak + 1.0, tiebreak)


def fused_scores(ranker: np.ndarray, partner: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Weighted reciprocal-rank fusion of two orders of the same candidates, per user: what the
    ranker puts first stays near the top unless the partner ranks it far down, and the other
    way round. Ranks, not scores, are fused: the two scales have nothing in common."""
    return 1.0 / (FUSION_K + ranks_within(ranker, users)) + PARTNER_WEIGHT / (
        FUSION_K + ranks_within(partner, users)
    )


def parse_name(name: str) -> tuple[str, str | None]:
    """(ordering, partner) of a pipeline name (`RankingPipeline.name`)."""
    ordering, _, partner = name.partition(FUSED_WITH)
    return ordering, (partner or None)


def baseline_tiebreak(frame: pd.DataFrame) -> np.ndarray:
    """How a single-source pipeline orders candidates its source scores alike (or not at all),
    in [0, 1) row by row (a user's scores must not depend on who else is ranked in the same
    call): all-time popularity, in (0.5, 1); below every touched item, an item nobody has
    touched by its text similarity to the user's recent items, in [0, 0.5]. Without the second
    part a baseline's new-item slot went to the new candidate with the smallest id."""
    popularity = frame[TIEBREAK].to_numpy(dtype=float)
    touched = 0.5 + 0.5 * popularity / (popularity + 1.0)
    if "text" in frame:
        text = np.nan_to_num(frame["text"].to_numpy(dtype=float), nan=-1.0)
        untouched = 0.25 * (np.clip(text, -1.0, 1.0) + 1.0)
    else:
        untouched = np.zeros(len(frame))
    return np.where(popularity > 0, touched, untouched)


def _same_state(fitted: Snapshot, newest: Snapshot) -> bool:
    """Whether two snapshots hold the same behaviour, catalog and pairs (cheap comparisons)."""
    return fitted.fingerprint == newest.fingerprint


def _top_with_new_items(scored: pd.DataFrame, k: int, slots: int) -> pd.DataFrame:
    """Each user's k best rows (scored is sorted best first per user), with up to `slots` of
    the last places kept for the user's best new items when the top k holds fewer."""
    place = scored.groupby(USER_ID, sort=False).cumcount()
    top = scored[place < k]
    if not slots:
        return top[[USER_ID, ITEM_ID, SCORE]]
    new = scored["item_is_new"].to_numpy() > 0
    new_place = scored[new].groupby(USER_ID, sort=False).cumcount()
    best_new = scored[new][new_place < slots]
    listed_new = top[top["item_is_new"] > 0].groupby(USER_ID).size()
    needed = (slots - listed_new.reindex(pd.unique(top[USER_ID])).fillna(0)).clip(lower=0)
    if needed.sum() == 0 or best_new.empty:
        return top[[USER_ID, ITEM_ID, SCORE]]
    extra = best_new[
        ~best_new.set_index([USER_ID, ITEM_ID]).index.isin(top.set_index([USER_ID, ITEM_ID]).index)
    ]
    extra = extra[
        extra.groupby(USER_ID, sort=False).cumcount() < extra[USER_ID].map(needed).fillna(0)
    ]
    counts = extra.groupby(USER_ID).size()
    # Drop as many of each user's lowest established rows as new rows come in.
    established = top[top["item_is_new"] <= 0]
    # Counted from the bottom, then back in top-first order to line up with the counts.
    from_bottom = established.iloc[::-1].groupby(USER_ID, sort=False).cumcount().iloc[::-1]
    drop = from_bottom < established[USER_ID].map(counts).fillna(0).to_numpy()
    kept = top.drop(index=established.index[drop.to_numpy()])
    combined = pd.concat([kept, extra])
    # The new items keep the places after the established ones, in their own order.
    combined["_new_last"] = combined.index.isin(extra.index)
    combined = combined.sort_values(
        [USER_ID, "_new_last", SCORE], ascending=[True, True, False], kind="stable"
    )
    return combined[[USER_ID, ITEM_ID, SCORE]]


def _empty_related() -> pd.DataFrame:
    return pd.DataFrame(
        {
            ITEM_ID: pd.Series(dtype=object),
            RELATED_ITEM_ID: pd.Series(dtype=object),
            SCORE: pd.Series(dtype=float),
            REASON: pd.Series(dtype=object),
        }
    )


def _covisited_related(related: pd.DataFrame, unavailable: frozenset[str]) -> pd.DataFrame:
    """Co-visited items scored 0.5 + 0.5 * weight / the item's strongest weight."""
    pairs = related[[ITEM_ID, RELATED_ITEM_ID, "covisitation_all"]]
    pairs = pairs[
        (pairs[ITEM_ID] != pairs[RELATED_ITEM_ID])
        & ~pairs[RELATED_ITEM_ID].isin(unavailable)
        & (pairs["covisitation_all"] > 0)
    ]
    weights = pairs["covisitation_all"].to_numpy(dtype=float)
    strongest = pairs.groupby(ITEM_ID)["covisitation_all"].transform("max").to_numpy(dtype=float)
    return pd.DataFrame(
        {
            ITEM_ID: pairs[ITEM_ID].astype(str).to_numpy(dtype=object),
            RELATED_ITEM_ID: pairs[RELATED_ITEM_ID].astype(str).to_numpy(dtype=object),
            SCORE: 0.5 + 0.5 * weights / strongest,
            REASON: REASON_VIEWED_TOGETHER,
        }
    )


def _text_related(text: TextNeighbourSource, k: int, unavailable: frozenset[str]) -> pd.DataFrame:
    """Every item's nearest available neighbours by its own vector, scored 0.5 * cosine."""
    count = len(text.item_ids)
    blocked = np.asarray(pd.Index(text.item_ids).isin(list(unavailable)), dtype=bool)
    # Searched one wider for the item itself, and wider still past unavailable neighbours.
    width = min(count, k + 1 + min(int(blocked.sum()), RELATED_MAX_SKIPPED))
    parts = [_empty_related()]
    for start in range(0, count, RELATED_QUERY_BLOCK):
        query = text.vectors[start : start + RELATED_QUERY_BLOCK]
        similarity, neighbours = text.index.search(query, width)
        own = np.arange(start, start + len(query))[:, None]
        found = neighbours >= 0
        keep = (
            found
            & (neighbours != own)
            & (similarity > 0)
            & ~blocked[np.where(found, neighbours, 0)]
        )
        # Only each item's k nearest kept neighbours can make its list.
        keep &= np.cumsum(keep, axis=1) <= k
        rows = np.broadcast_to(own, neighbours.shape)[keep]
        parts.append(
            pd.DataFrame(
                {
                    ITEM_ID: text.item_ids[rows].astype(str),
                    RELATED_ITEM_ID: text.item_ids[neighbours[keep]].astype(str),
                    SCORE: 0.5 * np.minimum(similarity[keep].astype(float), 1.0),
                    REASON: REASON_SIMILAR_TEXT,
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    # A duplicate vector may hold the item's own place under another row: drop self-pairs too.
    return frame[frame[ITEM_ID] != frame[RELATED_ITEM_ID]]


def _strongest_source(contributions: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """For each (user, item) of `pairs`: the recent item with the largest all-time
    co-visitation contribution to it (the first such row on a tie), else NaN."""
    because = np.full(len(pairs), np.nan, dtype=object)
    if contributions.empty:
        return because
    # One integer key per (user, item) over both frames, so no text is compared row by row.
    users = pd.factorize(np.concatenate([contributions[USER_ID], pairs[USER_ID]]))[0]
    items, item_ids = pd.factorize(np.concatenate([contributions[ITEM_ID], pairs[ITEM_ID]]))
    keys = users.astype(np.int64) * len(item_ids) + items
    given, wanted = keys[: len(contributions)], keys[len(contributions) :]
    values = contributions["covisitation_all"].to_numpy(dtype=float)
    order = np.lexsort((np.arange(len(given)), -values, given))
    first = order[run_starts(given[order])]
    known = given[first]  # ascending
    found = np.minimum(np.searchsorted(known, wanted), len(known) - 1)
    hit = known[found] == wanted
    because[hit] = contributions["source_item_id"].to_numpy()[first[found[hit]]]
    return because


def _most_similar_recent(
    text: CandidateSource | None, pairs: pd.DataFrame, recent: pd.DataFrame
) -> tuple[list, np.ndarray]:
    """For each (user, item): the user's recent item most similar by text, and the cosine."""
    if not isinstance(text, TextNeighbourSource) or text.index is None or recent.empty:
        return [None] * len(pairs), np.full(len(pairs), -1.0)
    similarity = text.recent_similarity(pairs, recent, exclude_self=True)
    return similarity["most_similar"].tolist(), similarity["max"].fillna(-1.0).to_numpy()


def _no_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: pd.Series(dtype=str),
            ITEM_ID: pd.Series(dtype=str),
            "event_type": pd.Series(dtype=str),
            "weight": pd.Series(dtype=float),
            "occurred_at": pd.Series(dtype="datetime64[ns]"),
        }
    )
