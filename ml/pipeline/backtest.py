"""Rolling-origin backtests: every competing pipeline judged at several cuts of event time.

For cut c with holdout window [c, next cut): sources fit on everything before c; for each user
active in the window, the first part of their window events is revealed (what a refreshing
system has seen when it ranks them) and the rest is the truth (ml.evaluation.protocol). The
learned ranker at cut c trains only on labelled candidates of earlier cuts, so nothing it learns
comes from at or after c. Baselines (one source's score each), the ranker and any ablation go
through the same `RankingPipeline.rank`, so the table compares what would have been served.

The winner is the pipeline with the best NDCG@k averaged over the evaluated cuts, unless that
pipeline trails the strongest single baseline at some cut and another one, level with it on
average (the paired bootstrap's interval holds zero, overall and for new users), leads that
baseline at every cut in both segments: then the other one wins (`choose`). The final pipeline
refits its sources on everything and, when the ranker wins, trains the ranker on the labelled
candidates of every cut.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import pandas as pd

from ml.constants import DEFAULT_TOP_K, ITEM_ID, NEW_USER, OCCURRED_AT, SEGMENT, USER_ID, WEIGHT
from ml.evaluation.metrics import ndcg_per_user
from ml.evaluation.protocol import (
    DEFAULT_REVEAL_FRACTION,
    NEW_ITEM_TARGETS,
    OVERALL,
    EvaluationTask,
    build_task,
    sample_users,
    segment_metrics,
)
from ml.evaluation.significance import Difference, paired_bootstrap
from ml.pipeline.pipeline import (
    FUSED_WITH,
    RANKER,
    PipelineConfig,
    RankingPipeline,
    parse_name,
)
from ml.pipeline.ranker import LABEL, Ranker, RankerConfig, within_budget
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.pipeline.sources import TextNeighbourSource

logger = logging.getLogger("freshrank.backtest")

FALLBACK_PIPELINE = "popularity_all"
NO_TEXT = "ranker_without_text"
# Mean NDCGs equal to this many decimal places tie, and the tie goes to the pipeline whose name
# sorts first: float noise (about 1e-15) must not choose the model, and no real difference
# between pipelines is that small.
NDCG_DECIMALS = 9


@dataclass(frozen=True)
class BacktestConfig:
    """How many cuts, how wide each holdout window is, and what counts as enough data."""

    cuts: int = 3  # evaluated cut points
    training_cuts: int = 2  # earlier cuts whose labelled candidates only train the ranker
    window_fraction: float = 0.08  # share of all events in each cut's holdout window
    reveal_fraction: float = DEFAULT_REVEAL_FRACTION
    min_users: int = 10  # a cut with fewer evaluated users is skipped
    max_users: int = 2_000  # a cut with more ranks a fixed hash-chosen sample of them
    min_ranker_users: int = 20  # labelled users (with a hit among candidates) to train a ranker
    ablations: bool = False  # also run the ranker without the text source and features
    ranker_half_life_cuts: float = 2.0  # a cut's labelled users weigh half every this many cuts
    ranker: RankerConfig = field(default_factory=RankerConfig)
    # Cuts are prepared (sources fitted, candidates built) in this many worker processes when
    # the log has at least parallel_min_events events (each worker loads the snapshot once).
    processes: int = 1
    parallel_min_events: int = 200_000


@dataclass
class CutData:
    """One cut: its task, the ranked users' behaviour, and labelled candidate features."""

    cut: pd.Timestamp
    end: pd.Timestamp
    task: EvaluationTask
    behaviour: Behaviour | None  # None: a training-only cut (see training_only)
    pipeline: RankingPipeline | None  # fitted before the cut; its snapshot is a summary
    frame: pd.DataFrame  # labelled candidates; a training-only cut's training rows
    evaluated: bool
    item_popularity: pd.Series  # positive weight per item before the cut (novelty)
    catalog_size: int
    candidates: int = 0  # labelled candidate rows before any were left out
    hits: int = 0  # truth hits among them

    @property
    def training_only(self) -> bool:
        """Whether the cut was reduced to its ranker training rows (reduce_to_training_rows)."""
        return self.pipeline is None

    def reduce_to_training_rows(self, position: int, max_rows: int) -> CutData:
        """Keep only what a cut that is never evaluated gives the backtests: its ranker
        training rows (user ids prefixed by ``position``). Its fitted sources, behaviour and
        other candidates are most of a prepared cut's memory, and the worker that prepared it
        need not send them back."""
        self.frame = _training_rows(_prefixed(self.frame, position), max_rows)
        self.pipeline, self.behaviour = None, None
        return self

    @cached_property
    def item_vectors(self) -> dict | None:
        """Item text vectors by id for the diversity metric (once per cut, not per pipeline)."""
        text = self.pipeline.sources.get("text")
        if isinstance(text, TextNeighbourSource) and text.index is not None:
            return dict(zip(text.item_ids, text.vectors, strict=True))
        return None


@dataclass
class BacktestResult:
    """Every pipeline's figures by cut and segment, the winner, and the final fitted pipeline."""

    table: pd.DataFrame  # pipeline, cut, segment, users, metrics...
    summary: pd.DataFrame  # pipeline x (mean and per-cut NDCG@k by segment), best first
    comparisons: pd.DataFrame  # the winner against every other pipeline, paired bootstrap
    winner: str
    pipeline: RankingPipeline
    cuts: list[pd.Timestamp]
    notes: list[str]
    importance: pd.Series
    seconds: float
    k: int = DEFAULT_TOP_K
    # Pipelines with a better mean that the winner is level with and was chosen over (choose).
    level_with: tuple[str, ...] = ()

    def mean_ndcg(self, pipeline: str, segment: str = OVERALL) -> float:
        """The pipeline's NDCG@k averaged over the evaluated cuts (NaN: never evaluated)."""
        if self.table.empty:
            return float("nan")
        rows = self.table[(self.table["pipeline"] == pipeline) & (self.table["segment"] == segment)]
        column = f"ndcg@{self.k}"
        return float(rows[column].mean()) if len(rows) and column in rows else float("nan")

    @property
    def pipelines(self) -> list[str]:
        return list(pd.unique(self.table["pipeline"])) if not self.table.empty else []


def cut_points(interactions: pd.DataFrame, count: int, window_fraction: float) -> list:
    """`count` cut times, oldest first, each `window_fraction` of the events before the next
    (the newest cut leaves the last window); only distinct times strictly inside the log."""
    times = interactions[OCCURRED_AT].sort_values().reset_index(drop=True)
    if times.empty:
        return []
    cuts = []
    for back in range(count, 0, -1):
        position = int(np.floor(len(times) * (1.0 - back * window_fraction)))
        if 0 < position < len(times):
            cuts.append(times.iloc[position])
    distinct = sorted(set(cuts))
    return [cut for cut in distinct if cut > times.iloc[0]]


def labelled(frame: pd.DataFrame, task: EvaluationTask) -> pd.DataFrame:
    """Candidates with `label` 1 where the user went on to choose the item, else 0."""
    frame = frame.merge(task.truth.assign(**{LABEL: 1}), on=[USER_ID, ITEM_ID], how="left")
    frame[LABEL] = frame[LABEL].fillna(0).astype(int)
    return frame


def prepare_cut(
    snapshot: Snapshot,
    cut: pd.Timestamp,
    end: pd.Timestamp,
    config: PipelineConfig,
    reveal_fraction: float,
    max_users: int | None = None,
    training_rows: tuple[int, int] | None = None,
) -> CutData:
    """Fit sources before `cut`, build the task for [cut, end) (for at most `max_users` of the
    users active in it), and label the candidates. ``training_rows`` (position, row budget):
    the cut only trains the ranker, so keep just its training rows."""
    before = snapshot.before(cut)
    events = snapshot.interactions
    window = events[(events[OCCURRED_AT] >= cut) & (events[OCCURRED_AT] < end)]
    positive_train = before.positive
    task = build_task(positive_train, window[window[WEIGHT] > 0], reveal_fraction)
    if max_users is not None:
        task = sample_users(task, max_users)
    users = task.users
    revealed = task.histories[task.histories[OCCURRED_AT] >= cut]
    known = pd.concat(
        [
            before.interactions[before.interactions[USER_ID].isin(users)],
            window.merge(
                revealed[[USER_ID, ITEM_ID, OCCURRED_AT]], on=[USER_ID, ITEM_ID, OCCURRED_AT]
            ),
        ],
        ignore_index=True,
    )
    behaviour = Behaviour(known, users=users)
    pipeline = RankingPipeline(config).fit_sources(before)
    frame = labelled(pipeline.candidate_features(behaviour), task)
    popularity = before.positive.groupby(ITEM_ID)[WEIGHT].sum()
    catalog_size = len(before.item_ids)
    data = CutData(
        cut,
        end,
        task,
        behaviour,
        pipeline.forget_events(),
        frame,
        evaluated=True,
        item_popularity=popularity,
        catalog_size=catalog_size,
        candidates=len(frame),
        hits=int(frame[LABEL].sum()),
    )
    if training_rows is not None:
        data.evaluated = False
        data.reduce_to_training_rows(*training_rows)
    return data


def _prepared_cuts(
    snapshot: Snapshot,
    cuts: list[pd.Timestamp],
    ends: list[pd.Timestamp],
    config: PipelineConfig,
    backtest: BacktestConfig,
) -> list[CutData]:
    """prepare_cut at every cut, in worker processes when the log is large enough. Cuts that
    only train the ranker come back as their training rows (unless ablations need them whole)."""
    training_only = len(cuts) - backtest.cuts
    budget = _cut_budget(backtest, len(cuts))
    tasks = [
        (
            cut,
            end,
            config,
            backtest.reveal_fraction,
            backtest.max_users,
            (position, budget) if position < training_only and not backtest.ablations else None,
        )
        for position, (cut, end) in enumerate(zip(cuts, ends, strict=True))
    ]
    parallel = min(backtest.processes, len(tasks))
    if parallel > 1 and len(snapshot.interactions) >= backtest.parallel_min_events:
        from ml.pipeline.parallel import in_processes

        return in_processes(prepare_cut, snapshot, tasks, parallel, what="backtest cut")
    return [prepare_cut(snapshot, *task) for task in tasks]


def _cut_budget(backtest: BacktestConfig, cuts: int) -> int:
    """Each cut's share of the ranker's training rows."""
    return backtest.ranker.max_rows // max(cuts, 1)


def _orderings(pipeline: RankingPipeline) -> list[str]:
    """Every single-source pipeline this configuration can compete with."""
    return list(pipeline.score_columns)


def _train_ranker(frames: list[pd.DataFrame], pipeline: RankingPipeline, config: BacktestConfig):
    """A ranker on the labelled frames, or None when too few users had a hit."""
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    hits = data.groupby(USER_ID)[LABEL].max().sum()
    if hits < config.min_ranker_users:
        return None
    # Newer cuts teach more: behaviour drifts, and the next cut looks most like the last one.
    ages = np.concatenate(
        [np.full(len(frame), len(frames) - 1 - position) for position, frame in enumerate(frames)]
    )
    weights = 0.5 ** (ages / config.ranker_half_life_cuts)
    logger.info(
        "training the ranker on %d candidate rows of %d labelled users from %d cut(s)",
        len(data),
        int(hits),
        len(frames),
    )
    return Ranker(config.ranker).fit(data, pipeline.training_columns(data), weights)


def _training_rows(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    """A cut's labelled candidates as the ranker learns from them: the users with something to
    find, within the cut's share of the ranker's row budget. Kept per cut, so the training set
    never exists in full first."""
    useful = frame.groupby(USER_ID)[LABEL].transform("max").to_numpy() > 0
    return within_budget(frame[useful], max_rows, seed=len(frame))


def _prefixed(frame: pd.DataFrame, position: int) -> pd.DataFrame:
    """Make user ids unique per cut, so a user labelled at two cuts forms two groups."""
    return frame.assign(**{USER_ID: f"{position}:" + frame[USER_ID].astype(str)})


def _measure(
    name: str,
    lists: pd.DataFrame,
    data: CutData,
    k: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    popularity, vectors = data.item_popularity, data.item_vectors
    table = segment_metrics(
        lists,
        data.task,
        k,
        catalog_size=data.catalog_size,
        item_popularity=popularity,
        item_vectors=vectors,
    )
    table.insert(0, "cut", str(data.cut))
    table.insert(0, "pipeline", name)
    per_user = ndcg_per_user(lists, data.task.truth, k).rename("ndcg").reset_index()
    per_user = per_user.merge(data.task.segments, on=USER_ID, how="left")
    per_user.insert(0, "cut", str(data.cut))
    per_user.insert(0, "pipeline", name)
    return table, per_user


def run_backtests(
    snapshot: Snapshot,
    config: PipelineConfig | None = None,
    backtest: BacktestConfig | None = None,
    champion: str | None = None,
) -> BacktestResult:
    """Judge every pipeline at the cuts, pick the winner, fit it on everything.

    Besides each single source and the ranker, the ranker fused with the strongest single
    source is judged, and with the ``champion``'s partner when the champion (its pipeline name)
    is a fused ranker whose partner is no longer the strongest: the gate compares a challenger
    with the champion's design on the same backtests."""
    started = time.perf_counter()
    config = config or PipelineConfig()
    backtest = backtest or BacktestConfig()
    k = config.k
    notes: list[str] = []
    total = backtest.cuts + backtest.training_cuts
    cuts = cut_points(snapshot.interactions, total, backtest.window_fraction)
    ends = [*cuts[1:], snapshot.as_of] if cuts else []  # a log of one moment has no cut
    prepared: list[CutData] = []
    for position, data in enumerate(_prepared_cuts(snapshot, cuts, ends, config, backtest)):
        cut = data.cut
        data.evaluated = position >= len(cuts) - backtest.cuts
        users = len(data.task.users)
        logger.info(
            "cut %d of %d at %s: %d users (%d new), %d candidates, %d truth hits among them",
            position + 1,
            len(cuts),
            cut,
            users,
            int((data.task.segments[SEGMENT] == NEW_USER).sum()),
            data.candidates,
            data.hits,
        )
        if data.evaluated and users < backtest.min_users:
            notes.append(
                f"cut at {cut} skipped: {users} users active after it (< {backtest.min_users})"
            )
            data.evaluated = False
        prepared.append(data)

    no_text = None
    if backtest.ablations and "text" in config.sources:
        no_text = replace(config, sources=tuple(s for s in config.sources if s != "text"))

    tables, per_users, training_frames, ablation_frames = [], [], [], []
    cut_budget = _cut_budget(backtest, len(prepared))
    judged = []  # (a cut, its ranker, its feedback multipliers): ranked again, fused, below
    ablated = []  # (a cut, the ablation's pipeline, ranker and candidates): fused too
    for position, data in enumerate(prepared):
        if data.evaluated:
            ranker = _train_ranker(training_frames, data.pipeline, backtest)
            orderings = _orderings(data.pipeline) + ([RANKER] if ranker is not None else [])
            # The same demotions whatever orders the candidates: computed once per cut.
            multipliers = data.pipeline.feedback_multipliers(data.frame, data.behaviour)
            for ordering in orderings:
                pipeline = data.pipeline.with_ordering(ordering, ranker)
                lists = pipeline.rank(data.frame, data.behaviour, False, multipliers)
                table, per_user = _measure(pipeline.name, lists, data, k)
                tables.append(table)
                per_users.append(per_user)
            if ranker is not None:
                judged.append((data, ranker, multipliers))
            if no_text is not None:
                ablated.append(
                    _ablation(
                        no_text, snapshot, data, ablation_frames, backtest, tables, per_users, k
                    )
                )
        elif no_text is not None:
            _ablation(
                no_text,
                snapshot,
                data,
                ablation_frames,
                backtest,
                tables,
                per_users,
                k,
                train_only=True,
            )
        if data.training_only:
            training_frames.append(data.frame)
        else:  # the cut is ranked again by the fused pipeline below: keep its frame whole
            training_frames.append(_training_rows(_prefixed(data.frame, position), cut_budget))

    # The fused rankers: with the strongest single source, then the champion's partner (a
    # source configured no more cannot be one).
    singles = set(_orderings(judged[0][0].pipeline)) if judged else set()
    partners = [strongest_baseline(tables, k), parse_name(champion)[1] if champion else None]
    for partner in dict.fromkeys(name for name in partners if name in singles):
        for data, ranker, multipliers in judged:
            pipeline = data.pipeline.with_ordering(RANKER, ranker, partner)
            lists = pipeline.rank(data.frame, data.behaviour, False, multipliers)
            table, per_user = _measure(pipeline.name, lists, data, k)
            tables.append(table)
            per_users.append(per_user)
        # The ablation fused the same way: what text adds to a fused winner.
        for data, pipeline, ranker, frame in (entry for entry in ablated if entry is not None):
            if partner not in pipeline.score_columns:  # text itself: no ablation to fuse
                continue
            fused = pipeline.with_ordering(RANKER, ranker, partner)
            lists = fused.rank(frame, data.behaviour, False)
            table, per_user = _measure(f"{NO_TEXT}{FUSED_WITH}{partner}", lists, data, k)
            tables.append(table)
            per_users.append(per_user)
    ablated.clear()
    for position, data in enumerate(prepared):
        if not data.training_only:  # what the frame kept for the second pass is done with
            data.reduce_to_training_rows(position, cut_budget)

    evaluated = [data for data in prepared if data.evaluated]
    if not (snapshot.interactions[WEIGHT] > 0).any():  # no filtered copy of every event
        notes.append(
            "no event weighs anything yet (impressions only, say): popularity has nothing to "
            "count, so no lists are published until a view, click or other positive event loads"
        )
    elif not evaluated:
        notes.append(
            "no cut had enough users to evaluate: the model was skipped and popularity lists "
            "are published"
        )
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    per_user = pd.concat(per_users, ignore_index=True) if per_users else pd.DataFrame()
    summary = summarise(table, k)
    choice = choose(summary, table, per_user, k)
    winner = choice.winner
    notes.extend(choice.notes)

    ordering, fused_with = parse_name(winner)
    final = RankingPipeline(config, ordering, fused_with).fit_sources(snapshot)
    importance = pd.Series(dtype=float)
    if ordering == RANKER:
        ranker = _train_ranker(training_frames, final, backtest)
        final.ranker = ranker
        importance = ranker.importance()
    comparisons = compare(per_user, winner) if not per_user.empty else pd.DataFrame()
    seconds = time.perf_counter() - started
    logger.info("backtests done in %.1f s; winner %s", seconds, winner)
    return BacktestResult(
        table=table,
        summary=summary,
        comparisons=comparisons,
        winner=winner,
        pipeline=final,
        cuts=[data.cut for data in evaluated],
        notes=notes,
        importance=importance,
        seconds=seconds,
        k=k,
        level_with=choice.level_with,
    )


def _ablation(
    config: PipelineConfig,
    snapshot: Snapshot,
    data: CutData,
    frames: list[pd.DataFrame],
    backtest: BacktestConfig,
    tables: list,
    per_users: list,
    k: int,
    train_only: bool = False,
) -> tuple[CutData, RankingPipeline, Ranker, pd.DataFrame] | None:
    """The ranker without the text source and text features, trained and judged the same way.
    Returns what the fused pass needs to fuse it too (None: nothing judged at this cut)."""
    pipeline = RankingPipeline(config).fit_sources(snapshot.before(data.cut))
    frame = labelled(pipeline.candidate_features(data.behaviour), data.task)
    judged = None
    if not train_only:
        ranker = _train_ranker(frames, pipeline, backtest)
        if ranker is not None:
            lists = pipeline.with_ordering(RANKER, ranker).rank(frame, data.behaviour, False)
            table, per_user = _measure(NO_TEXT, lists, data, k)
            tables.append(table)
            per_users.append(per_user)
            judged = (data, pipeline, ranker, frame)
    frames.append(_prefixed(frame, len(frames)))
    return judged


def strongest_baseline(tables: list[pd.DataFrame], k: int) -> str | None:
    """The single-source pipeline that ranks first in `summarise` (the best mean NDCG@k
    overall, ties by name), which the ranker is fused with (RankingPipeline.partner); None
    without one."""
    if not tables:
        return None
    return _strongest_single(pd.concat(tables, ignore_index=True), OVERALL, k)


def _strongest_single(table: pd.DataFrame, segment: str, k: int) -> str | None:
    """The single-source pipeline with the best mean NDCG@k in ``segment`` (ties by name)."""
    rows = table[(table["segment"] == segment) & ~table["pipeline"].map(_learned)]
    means = rows.groupby("pipeline")[f"ndcg@{k}"].mean().round(NDCG_DECIMALS).dropna()
    if means.empty:
        return None
    ordered = means.reset_index().sort_values([f"ndcg@{k}", "pipeline"], ascending=[False, True])
    return str(ordered["pipeline"].iloc[0])


def _learned(name: str) -> bool:
    """Whether a pipeline orders by the ranker (alone, fused, or an ablation of it)."""
    return is_ablation(name) or parse_name(name)[0] == RANKER


def is_ablation(name: str) -> bool:
    """Whether a pipeline is an ablation (the ranker without text, alone or fused): measured,
    never a candidate for serving."""
    return parse_name(name)[0] == NO_TEXT


def summarise(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """Pipelines (best overall first, ties within NDCG_DECIMALS by name) x mean NDCG@k by
    segment, plus each cut's overall figure."""
    column = f"ndcg@{k}"
    if table.empty:
        return pd.DataFrame()
    means = table.pivot_table(index="pipeline", columns="segment", values=column, aggfunc="mean")
    ordered = [s for s in (OVERALL, NEW_USER, "returning_user", NEW_ITEM_TARGETS) if s in means]
    summary = means[ordered].add_prefix("mean ")
    overall = table[table["segment"] == OVERALL]
    per_cut = overall.pivot_table(index="pipeline", columns="cut", values=column, aggfunc="mean")
    summary = summary.join(per_cut.add_prefix("cut "))
    hit = f"hit_rate@{k}"
    new_items = table[table["segment"] == NEW_ITEM_TARGETS]
    if hit in new_items:
        summary[f"mean new-item {hit}"] = new_items.groupby("pipeline")[hit].mean()
    mean_overall = f"mean {OVERALL}"
    return summary.rename_axis("pipeline").sort_values(
        [mean_overall, "pipeline"],
        ascending=[False, True],
        key=lambda column: column.round(NDCG_DECIMALS) if column.name == mean_overall else column,
    )


@dataclass(frozen=True)
class Choice:
    """The winner of the backtests, the better-on-average pipelines it was chosen over (level
    with it), and why, for the run's notes and the gate."""

    winner: str
    level_with: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def choose(summary: pd.DataFrame, table: pd.DataFrame, per_user: pd.DataFrame, k: int) -> Choice:
    """The pipeline to serve: the best mean NDCG@k overall (``summary``'s order, an ablation
    never), unless it trails the strongest single baseline at some cut.

    Then the first pipeline in that order that leads the strongest baseline at every cut, overall
    and for new users (each segment's own strongest, by its mean), and is level with the leader
    on average in both segments (the leader-minus-it paired-bootstrap interval holds zero) wins
    instead: the two are equally good by every figure the backtests can tell apart, and only it
    was never worse than what the platform would serve without a model. With none such, the
    leader wins; no margin of safety is bought with a mean that is measurably lower."""
    if summary.empty:
        return Choice(FALLBACK_PIPELINE)
    order = [str(name) for name in summary.index if not is_ablation(str(name))]
    leader = order[0]
    baselines = {segment: _strongest_single(table, segment, k) for segment in (OVERALL, NEW_USER)}
    behind = _cuts_behind(table, leader, baselines, k)
    if not behind:
        return Choice(leader)
    for name in order[1:]:
        if _cuts_behind(table, name, baselines, k):
            continue
        differences = {
            segment: _difference(per_user, leader, name, segment) for segment in (OVERALL, NEW_USER)
        }
        # Measurably behind on average, or nothing to compare them on (a segment without users,
        # new users at no cut say, has nothing to tell them apart by).
        if differences[OVERALL] is None or any(
            d is not None and d.low > 0 for d in differences.values()
        ):
            continue
        level = "; ".join(
            f"{segment} {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
            for segment, d in differences.items()
            if d is not None
        )
        note = (
            f"{name} chosen over {leader}, the best on average: level with it ({leader} minus "
            f"{name}, paired bootstrap: {level}), and ahead of the strongest baseline at every "
            f"cut, where {leader} trails it ({'; '.join(behind)})"
        )
        return Choice(name, (leader,), (note,))
    return Choice(leader)


def _cuts_behind(
    table: pd.DataFrame, name: str, baselines: dict[str, str | None], k: int
) -> list[str]:
    """Where ``name`` is not ahead of its segment's strongest single baseline (``baselines``,
    by segment: overall, new users): "segment at cut: its NDCG against the baseline's" for each
    evaluated cut. A baseline is never ahead of itself, so the strongest is behind somewhere."""
    column, behind = f"ndcg@{k}", []
    for segment, baseline in baselines.items():
        if baseline is None:
            continue
        rows = table[table["segment"] == segment]
        mine = rows[rows["pipeline"] == name].set_index("cut")[column]
        theirs = rows[rows["pipeline"] == baseline].set_index("cut")[column]
        mine, theirs = mine.align(theirs, join="inner")
        for cut in mine.index[~(mine > theirs).to_numpy()]:
            behind.append(
                f"{segment} at {cut}: {mine[cut]:.4f} against {baseline}'s {theirs[cut]:.4f}"
            )
    return behind


def _difference(per_user: pd.DataFrame, first: str, second: str, segment: str) -> Difference | None:
    """first minus second on the same (cut, user) pairs of ``segment`` (paired bootstrap), or
    None where they share none."""
    if per_user.empty:
        return None
    rows = per_user if segment == OVERALL else per_user[per_user[SEGMENT] == segment]
    mine = rows[rows["pipeline"] == first].set_index(["cut", USER_ID])["ndcg"]
    theirs = rows[rows["pipeline"] == second].set_index(["cut", USER_ID])["ndcg"]
    mine, theirs = mine.align(theirs, join="inner")
    if mine.empty:
        return None
    return paired_bootstrap(pd.Series(mine.to_numpy()), pd.Series(theirs.to_numpy()))


def compare(per_user: pd.DataFrame, winner: str) -> pd.DataFrame:
    """The winner's NDCG minus every other pipeline's on the same (cut, user) pairs: mean, 95%
    paired-bootstrap interval and P(winner ahead), overall and for new users."""
    rows = []
    for other in pd.unique(per_user["pipeline"]):
        if other == winner:
            continue
        for segment in (OVERALL, NEW_USER):
            difference = _difference(per_user, winner, other, segment)
            if difference is None:
                continue
            rows.append(
                {
                    "against": other,
                    "segment": segment,
                    "users": difference.users,
                    "ndcg difference": round(difference.mean, 4),
                    "95% interval": f"[{difference.low:+.4f}, {difference.high:+.4f}]",
                    "P(winner ahead)": round(difference.share_ahead, 3),
                }
            )
    return pd.DataFrame(rows)
