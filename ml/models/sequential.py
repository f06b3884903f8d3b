"""A sequential transformer recommender (SASRec family) whose items carry their text.

An item's representation is a learned ID embedding plus a projection of its text embedding. Items
nobody interacted with in training have no usable ID embedding; they are represented by their text
alone, so a brand-new item can still be recommended (item cold start). During training a share of
ID embeddings is hidden batch by batch, which teaches the model to rank from text too.

A user is represented by running the encoder over their most recent items at scoring time: a user
who arrived a minute ago is scored from those few events, with no retraining (user cold start).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ml.constants import ITEM_ID, OCCURRED_AT, USER_ID, WEIGHT
from ml.frames import require_columns

logger = logging.getLogger("freshrank.sequential")

PADDING = 0  # item position 0 is padding; catalog item i sits at position i + 1


@dataclass(frozen=True)
class SequentialConfig:
    """Hyperparameters of the sequential recommender (the defaults train in minutes on 2 cores)."""

    max_length: int = 50
    hidden_size: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.2
    use_ids: bool = True
    use_text: bool = True
    id_dropout: float = 0.1  # share of ID embeddings hidden per batch, so text learns to rank
    future_window: int = 5  # each position learns the next this-many items
    learning_rate: float = 2e-3
    # Cosine decay over max_epochs after a short linear warm-up: late epochs settle instead of
    # jumping around the optimum, so the epoch early stopping picks is a stable one.
    lr_schedule: str = "cosine"  # or "constant"
    warmup_share: float = 0.05
    weight_decay: float = 1e-5
    batch_size: int = 128
    max_epochs: int = 10  # the cosine schedule spans these; early stopping keeps the best
    patience: int = 4  # epochs without a new best before stopping
    min_epochs: int = 8  # validation NDCG dips early (the model leaves popularity first)
    full_softmax_max_items: int = 50_000  # above this, a sampled softmax
    sampled_negatives: int = 4096
    seed: int = 7
    threads: int | None = None

    def __post_init__(self) -> None:
        if not (self.use_ids or self.use_text):
            raise ValueError("the sequential model needs item IDs, item text, or both")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} must divide by heads {self.heads}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"lr_schedule must be 'cosine' or 'constant', not {self.lr_schedule!r}"
            )


@dataclass
class TrainingHistory:
    """Per-epoch figures of one fit, and which epoch's weights were kept."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_validation: float = float("nan")
    seconds: float = 0.0


def _build_network(n_items: int, text_vectors: np.ndarray | None, config: SequentialConfig):
    import torch
    from torch import nn

    class SASRec(nn.Module):
        """Causal self-attention over item sequences; scores are dot products with item vectors."""

        def __init__(self) -> None:
            super().__init__()
            size = config.hidden_size
            self.id_embedding = nn.Embedding(n_items + 1, size, padding_idx=PADDING)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            self.register_buffer("id_known", torch.zeros(n_items + 1))
            # Per-item output bias: popularity is learned here, not squeezed into the vectors.
            self.id_bias = nn.Embedding(n_items + 1, 1)
            nn.init.zeros_(self.id_bias.weight)
            if text_vectors is not None:
                self.register_buffer("text", torch.as_tensor(text_vectors, dtype=torch.float32))
                self.text_projection = nn.Linear(text_vectors.shape[1], size)
                self.text_bias = nn.Linear(text_vectors.shape[1], 1)
            self.position = nn.Embedding(config.max_length, size)
            layer = nn.TransformerEncoderLayer(
                size,
                config.heads,
                dim_feedforward=size * 2,
                dropout=config.dropout,
                batch_first=True,
                norm_first=True,
                activation="gelu",
            )
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            self.dropout = nn.Dropout(config.dropout)
            self.norm = nn.LayerNorm(size)

        def item_table(self) -> tuple[torch.Tensor, torch.Tensor]:
            """(item vectors, item output biases); row 0 is padding."""
            table = torch.zeros_like(self.id_embedding.weight)
            bias = torch.zeros(table.shape[0], device=table.device)
            if config.use_ids:
                keep = self.id_known
                if self.training and config.id_dropout > 0:
                    keep = keep * (torch.rand_like(keep) >= config.id_dropout)
                table = table + self.id_embedding.weight * keep.unsqueeze(1)
                bias = bias + self.id_bias.weight.squeeze(1) * keep
            if config.use_text:
                table = table + self.text_projection(self.text)
                bias = bias + self.text_bias(self.text).squeeze(1)
            padding_row = torch.ones(table.shape[0], 1, device=table.device)
            padding_row[PADDING] = 0
            return table * padding_row, bias

        def forward(self, sequences: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
            length = sequences.shape[1]
            positions = torch.arange(length, device=sequences.device)
            hidden = table[sequences] * math.sqrt(config.hidden_size) + self.position(positions)
            causal = torch.triu(
                torch.full((length, length), float("-inf"), device=sequences.device), diagonal=1
            )
            hidden = self.encoder(self.dropout(hidden), mask=causal)
            return self.norm(hidden)

    return SASRec()


def _learning_rate_factor(config: SequentialConfig, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each optimiser step."""
    if config.lr_schedule == "constant":
        return lambda _step: 1.0
    warmup = max(1, int(total_steps * config.warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class SequentialRecommender:
    """Fit on interaction sequences; score any user from the recent items they bring."""

    def __init__(self, config: SequentialConfig | None = None) -> None:
        self.config = config or SequentialConfig()
        self.history = TrainingHistory()
        self._item_index: pd.Index | None = None
        self._network: Any = None

    @property
    def item_ids(self) -> np.ndarray:
        return self._fitted_index().to_numpy()

    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def fit(
        self,
        interactions: pd.DataFrame,
        catalog_item_ids: Iterable[Hashable] | None = None,
        text_vectors: pd.DataFrame | None = None,
        validate: Callable[[SequentialRecommender], float] | None = None,
        stop_after: int | None = None,
        replica: tuple[int, int] = (0, 1),
    ) -> SequentialRecommender:
        """Train with a next-item objective; with ``validate``, keep the best epoch and stop early.

        ``stop_after`` ends training after that many epochs while the learning-rate schedule
        still spans ``max_epochs``: a refit on more data for the epochs early stopping chose
        follows the same learning-rate path as the run that chose them.

        ``text_vectors`` is indexed by item_id (one row per item, the embedding dimensions as
        columns); items without a row get a zero text vector. ``validate`` returns a figure to
        maximise (NDCG@10 on a later time window, say).

        ``replica`` is (rank, world size) of a data-parallel run (ml/distributed/training.py):
        with a world above 1 the network is wrapped in DistributedDataParallel (the process
        group must exist) and each rank trains on its share of every batch, so gradients are
        averaged across ranks and every rank ends with the same weights.
        """
        import torch

        config = self.config
        require_columns(interactions, (USER_ID, ITEM_ID, OCCURRED_AT), name="interactions")
        torch.manual_seed(config.seed)
        generator = np.random.default_rng(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        item_ids = pd.Index(interactions[ITEM_ID].astype(str).unique())
        if catalog_item_ids is not None:
            item_ids = item_ids.union(pd.Index([str(item) for item in catalog_item_ids]))
        self._item_index = pd.Index(sorted(item_ids))
        text = self._text_matrix(text_vectors) if config.use_text else None
        self._network = _build_network(len(self._item_index), text, config)
        sequences = self._sequences(interactions)
        known = np.zeros(len(self._item_index) + 1, dtype=np.float32)
        for sequence in sequences:
            known[sequence] = 1.0
        known[PADDING] = 0.0
        self._network.id_known.copy_(torch.as_tensor(known))
        windows = self._training_windows(sequences)
        if len(windows) == 0:
            raise ValueError("no user has two or more interactions: nothing to learn order from")
        optimizer = torch.optim.AdamW(
            self._network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        rank, world_size = replica
        trained = self._network
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            trained = DistributedDataParallel(self._network)
        steps_per_epoch = math.ceil(len(windows) / config.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _learning_rate_factor(config, steps_per_epoch * config.max_epochs)
        )
        self.history = TrainingHistory()
        best_state, best_value, stale_epochs = None, -math.inf, 0
        started = time.perf_counter()
        last_epoch = min(config.max_epochs, stop_after or config.max_epochs)
        for epoch in range(1, last_epoch + 1):
            epoch_started = time.perf_counter()
            loss = self._train_epoch(
                windows, optimizer, scheduler, generator, trained, rank, world_size
            )
            record = {
                "epoch": float(epoch),
                "loss": loss,
                "seconds": time.perf_counter() - epoch_started,
            }
            if validate is not None:
                value = float(validate(self))
                record["validation"] = value
                if value > best_value + 1e-6:
                    best_value, stale_epochs = value, 0
                    best_state = copy.deepcopy(self._network.state_dict())
                    self.history.best_epoch = epoch
                else:
                    stale_epochs += 1
            else:
                self.history.best_epoch = epoch
            self.history.epochs.append(record)
            logger.info(
                "epoch %d: loss %.4f%s (%.1f s)",
                epoch,
                loss,
                f", validation {record['validation']:.4f}" if "validation" in record else "",
                record["seconds"],
            )
            if (
                validate is not None
                and stale_epochs >= config.patience
                and epoch >= config.min_epochs
            ):
                break
        if best_state is not None:
            self._network.load_state_dict(best_state)
            self.history.best_validation = best_value
        self.history.seconds = time.perf_counter() - started
        self._network.eval()
        return self

    def score(
        self, histories: pd.DataFrame, batch_size: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """(user ids sorted, users x items scores) from each user's most recent items.

        Histories are ordered by ``occurred_at`` when present (else by row order); items outside
        the index are skipped. A user with no known item gets a row of zeros.
        """
        import torch

        index = self._fitted_index()
        require_columns(histories, (USER_ID, ITEM_ID), name="histories")
        user_sequences = self._user_sequences(histories)
        user_ids = np.array(sorted(user_sequences), dtype=object)
        scores = np.zeros((len(user_ids), len(index)), dtype=np.float32)
        network = self._network
        network.eval()
        with torch.inference_mode():
            table, bias = network.item_table()
            for start in range(0, len(user_ids), batch_size):
                batch_users = user_ids[start : start + batch_size]
                batch, lengths = self._pad([user_sequences[user] for user in batch_users])
                hidden = network(torch.as_tensor(batch), table)
                last = hidden[torch.arange(len(batch_users)), torch.as_tensor(lengths) - 1]
                batch_scores = (last @ table.T + bias)[:, 1:].numpy()
                empty = np.asarray(lengths) == 0
                batch_scores[empty] = 0.0
                scores[start : start + len(batch_users)] = batch_scores
        return user_ids, scores

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model: config, item index and weights."""
        return {
            "config": asdict(self.config),
            "item_ids": list(self._fitted_index()),
            "weights": self._network.state_dict(),
            "history": asdict(self.history),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SequentialRecommender:
        config = SequentialConfig(**state["config"])
        model = cls(config)
        model._item_index = pd.Index(state["item_ids"])
        weights = state["weights"]
        text = weights["text"].numpy() if "text" in weights else None
        model._network = _build_network(len(model._item_index), text, config)
        model._network.load_state_dict(weights)
        model._network.eval()
        model.history = TrainingHistory(**state.get("history", {}))
        return model

    def with_catalog(
        self, catalog_item_ids: Iterable[Hashable], text_vectors: pd.DataFrame | None
    ) -> SequentialRecommender:
        """This trained model over today's catalog, with today's item text.

        Items it was trained on keep their learned ID embeddings; items that arrived since are
        represented by their text alone, and every item's text vector is the current one. Nothing
        is retrained: the learned projection and encoder apply to any text vector.
        """
        import torch

        old_index = self._fitted_index()
        new_index = pd.Index(sorted({str(item) for item in catalog_item_ids} | set(old_index)))
        config = self.config
        model = SequentialRecommender(config)
        model._item_index = new_index
        text = model._text_matrix(text_vectors) if config.use_text else None
        if config.use_text and text_vectors is not None:
            # Keep a trained item's old vector where today's text is missing.
            old_text = self._network.text.numpy()
            rows = old_index.get_indexer(new_index)
            missing = ~text[1:].any(axis=1) & (rows >= 0)
            text[1:][missing] = old_text[rows[missing] + 1]
        network = _build_network(len(new_index), text, config)
        state = {
            name: value
            for name, value in self._network.state_dict().items()
            if name not in ("id_embedding.weight", "id_bias.weight", "id_known", "text")
        }
        network.load_state_dict(state, strict=False)
        rows = old_index.get_indexer(new_index)
        known = rows >= 0
        with torch.no_grad():
            network.id_embedding.weight[1:][torch.as_tensor(known)] = (
                self._network.id_embedding.weight[1:][torch.as_tensor(rows[known])]
            )
            network.id_known[1:][torch.as_tensor(known)] = self._network.id_known[1:][
                torch.as_tensor(rows[known])
            ]
            network.id_bias.weight[1:][torch.as_tensor(known)] = self._network.id_bias.weight[1:][
                torch.as_tensor(rows[known])
            ]
        network.eval()
        model._network = network
        model.history = self.history
        return model

    # internals -------------------------------------------------------------------------------

    def _fitted_index(self) -> pd.Index:
        if self._item_index is None or self._network is None:
            raise RuntimeError("SequentialRecommender is not fitted yet: call fit(interactions)")
        return self._item_index

    def _text_matrix(self, text_vectors: pd.DataFrame | None) -> np.ndarray:
        if text_vectors is None or text_vectors.empty:
            raise ValueError("use_text=True needs text_vectors (one row per item_id)")
        vectors = text_vectors.copy()
        vectors.index = vectors.index.astype(str)
        aligned = vectors.reindex(self._item_index).fillna(0.0).to_numpy(dtype=np.float32)
        padding = np.zeros((1, aligned.shape[1]), dtype=np.float32)
        return np.vstack([padding, aligned])

    def _positions(self, items: pd.Series) -> np.ndarray:
        return self._item_index.get_indexer(items.astype(str)) + 1  # unknown -> 0 (padding)

    def _sequences(self, interactions: pd.DataFrame) -> list[np.ndarray]:
        frame = interactions
        if WEIGHT in frame:
            frame = frame[frame[WEIGHT] > 0]
        frame = frame.assign(_position=self._positions(frame[ITEM_ID]))
        frame = frame.sort_values([USER_ID, OCCURRED_AT, ITEM_ID], kind="stable")
        return [
            group.to_numpy(dtype=np.int64)
            for _, group in frame.groupby(USER_ID, sort=True)["_position"]
            if len(group) >= 2
        ]

    def _user_sequences(self, histories: pd.DataFrame) -> dict[str, np.ndarray]:
        frame = histories.assign(_position=self._positions(histories[ITEM_ID]))
        if OCCURRED_AT in frame:
            frame = frame.sort_values([USER_ID, OCCURRED_AT, ITEM_ID], kind="stable")
        result = {}
        for user, group in frame.groupby(frame[USER_ID].astype(str), sort=False)["_position"]:
            positions = group.to_numpy(dtype=np.int64)
            result[user] = positions[positions != PADDING][-self.config.max_length :]
        return result

    def _training_windows(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Right-padded windows of max_length inputs plus future_window items of lookahead."""
        span = self.config.max_length + self.config.future_window
        windows = []
        length = self.config.max_length
        for sequence in sequences:
            # Input chunks end where the next one starts, the newest chunk last; each carries
            # the items after it as lookahead targets.
            for input_end in range(len(sequence) - 1, 0, -length):
                input_start = max(0, input_end - length)
                piece = sequence[input_start : input_start + span]
                windows.append(np.pad(piece, (0, span - len(piece))))
        return np.asarray(windows, dtype=np.int64).reshape(-1, span)

    def _pad(self, sequences: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        length = max(1, max((len(sequence) for sequence in sequences), default=1))
        batch = np.zeros((len(sequences), length), dtype=np.int64)
        lengths = []
        for row, sequence in enumerate(sequences):
            batch[row, : len(sequence)] = sequence
            lengths.append(len(sequence))
        return batch, lengths

    def _train_epoch(
        self,
        windows: np.ndarray,
        optimizer,
        scheduler,
        generator: np.random.Generator,
        trained,
        rank: int,
        world_size: int,
    ) -> float:
        """One pass over the windows; ``trained`` is the network or its DDP wrapper, and this
        rank takes every world_size-th window of each batch (every rank draws the same order)."""
        import torch
        import torch.nn.functional as functional

        network, config = self._network, self.config
        network.train()
        n_items = len(self._fitted_index())
        order = generator.permutation(len(windows))
        total, count = 0.0, 0
        horizon = config.future_window
        unseen = network.id_known == 0  # includes the padding row
        unseen_bias = torch.zeros(unseen.shape).masked_fill(unseen, float("-inf"))
        # A last batch smaller than the world would leave a rank without windows: it is skipped.
        for start in range(0, len(order) - world_size + 1, config.batch_size):
            rows = order[start : start + config.batch_size][rank::world_size]
            batch = torch.as_tensor(windows[rows])
            inputs = batch[:, : config.max_length]
            # targets[:, :, j] is the item j + 1 steps ahead: the model learns what the user does
            # next within a short horizon, which is robust to arbitrary order inside a session.
            targets = torch.stack(
                [batch[:, step : step + config.max_length] for step in range(1, horizon + 1)],
                dim=2,
            )
            valid = (inputs != PADDING) & (targets[:, :, 0] != PADDING)
            table, bias = network.item_table()
            hidden = trained(inputs, table)[valid]
            wanted = targets[valid]  # (positions, horizon), PADDING where the sequence ended
            if n_items <= config.full_softmax_max_items:
                # Items with no training interaction are never a target here: as negatives they
                # would teach the model that items like them never happen, which is exactly
                # wrong for tomorrow's new items. A -inf bias keeps them out of the softmax (one
                # fused addmm: no second pass over the positions x items logits).
                logits = torch.addmm(bias + unseen_bias, hidden, table.T)
                columns = wanted
            else:
                seen = torch.nonzero(~unseen).squeeze(1)
                sampled = seen[
                    torch.as_tensor(generator.integers(0, len(seen), size=config.sampled_negatives))
                ]
                candidates = torch.unique(torch.cat([wanted[wanted != PADDING], sampled]))
                logits = hidden @ table[candidates].T + bias[candidates]
                columns = torch.searchsorted(candidates, wanted.clamp(min=1))
            log_probabilities = functional.log_softmax(logits, dim=1)
            present = wanted != PADDING
            picked = log_probabilities.gather(1, columns).masked_fill(~present, 0.0)
            loss = -picked.sum() / present.sum()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * int(valid.sum())
            count += int(valid.sum())
        return total / max(count, 1)


class SequentialEnsemble:
    """Several sequential models trained alike from different seeds, scored as their mean.

    Each member's scores are logits; their mean ranks as the mean of the members' log
    probabilities would (log-softmax only shifts each user's row by a constant), and it keeps
    each member's sign, so "model-driven" still means a positive score. Seeds differ in what
    they overfit; the mean keeps what they agree on, which is steadier on a new time window.
    """

    def __init__(self, members: list[SequentialRecommender]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        first = members[0].item_ids
        for member in members[1:]:
            if not np.array_equal(member.item_ids, first):
                raise ValueError("ensemble members must share one item index")
        self.members = list(members)

    @property
    def item_ids(self) -> np.ndarray:
        return self.members[0].item_ids

    @property
    def history(self) -> TrainingHistory:
        return self.members[0].history

    def score(
        self, histories: pd.DataFrame, batch_size: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """(user ids sorted, users x items mean scores); users with no known item get zeros."""
        user_ids, total = self.members[0].score(histories, batch_size)
        for member in self.members[1:]:
            other_users, scores = member.score(histories, batch_size)
            if not np.array_equal(other_users, user_ids):
                raise RuntimeError("ensemble members scored different users")
            total = total + scores
        return user_ids, total / len(self.members)

    def with_catalog(
        self, catalog_item_ids: Iterable[Hashable], text_vectors: pd.DataFrame | None
    ) -> SequentialEnsemble:
        catalog = list(catalog_item_ids)
        return SequentialEnsemble(
            [member.with_catalog(catalog, text_vectors) for member in self.members]
        )

    def state(self) -> dict[str, Any]:
        return {"members": [member.state() for member in self.members]}


def model_from_state(state: dict[str, Any]) -> SequentialRecommender | SequentialEnsemble:
    """Rebuild what ``state()`` saved: one sequential model or an ensemble of them."""
    if "members" in state:
        return SequentialEnsemble(
            [SequentialRecommender.from_state(member) for member in state["members"]]
        )
    return SequentialRecommender.from_state(state)
