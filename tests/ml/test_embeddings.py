from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml.embeddings import (
    EmbeddingConfig,
    TextEmbedder,
    cpu_has_bfloat16,
    resolve_model_path,
    resolve_precision,
)

TEXTS = [
    "Toy Story. Categories: Adventure, Animation, Children",
    "Heat",
    "A long description of a film about a heist in Los Angeles, with many more words " * 4,
    "",
]


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder(EmbeddingConfig(batch_size=2, device="cpu", precision="float32"))


def test_vectors_are_unit_length_with_the_model_dimension(embedder: TextEmbedder) -> None:
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers(embedder: TextEmbedder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(
        str(resolve_model_path(embedder.config.model)), device="cpu"
    ).encode(TEXTS, normalize_embeddings=True, show_progress_bar=False)
    np.testing.assert_allclose(embedder.encode(TEXTS), reference, atol=1e-5)


def test_vectors_do_not_depend_on_the_order_of_the_texts(embedder: TextEmbedder) -> None:
    # Batches of two: the longest text comes first, and one of the three of one length is
    # padded to it. Unless batches follow from the texts alone, the input order picks which one,
    # and padding changes a vector in its last bits. A warehouse may return its rows in any
    # order, so the vectors must be the same to the last bit.
    texts = [TEXTS[0], "a cat sleeping", "a dog sleeping", "a cow sleeping"]
    forward = embedder.encode(texts)
    backward = embedder.encode(texts[::-1])
    np.testing.assert_array_equal(forward, backward[::-1])
    assert embedder.encode([]).shape == (0, 384)


def test_similar_texts_are_closer(embedder: TextEmbedder) -> None:
    cat, kitten, tax = embedder.encode(["a cat sleeping", "a small kitten napping", "tax law"])
    assert cat @ kitten > cat @ tax


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path / "nowhere"))


def test_local_model_folder_loads(tmp_path: Path, embedder: TextEmbedder) -> None:
    """A user-supplied model folder (here a copy of the packaged one) loads by path."""
    import shutil

    folder = tmp_path / "my-model"
    shutil.copytree(resolve_model_path(embedder.config.model), folder)
    local = TextEmbedder(EmbeddingConfig(model=str(folder), device="cpu", precision="float32"))
    assert local.model_name == str(folder.resolve())
    np.testing.assert_allclose(local.encode(TEXTS[:2]), embedder.encode(TEXTS[:2]), atol=1e-5)


def test_only_changed_texts_or_models_are_embedded_again() -> None:
    import pandas as pd

    from ml.embeddings import items_to_embed
    from ml.text import content_hash

    texts = pd.Series({"a": "alpha", "b": "beta", "c": "gamma"})
    stored = pd.Series({"a": content_hash("alpha", "m1"), "b": content_hash("old beta", "m1")})
    assert sorted(items_to_embed(texts, stored, "m1").index) == ["b", "c"]
    assert sorted(items_to_embed(texts, stored, "m2").index) == ["a", "b", "c"]
    assert items_to_embed(texts, pd.Series(dtype=object), "m1").index.tolist() == ["a", "b", "c"]


def test_model_dimension_reads_the_config_and_agrees_with_the_model(
    embedder: TextEmbedder, tmp_path: Path
) -> None:
    import json

    from ml.embeddings import PACKAGED_MODEL, model_dimension

    assert model_dimension(PACKAGED_MODEL) == embedder.encode(["x"]).shape[1] == 384
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    assert model_dimension(str(tmp_path)) == 512


@pytest.mark.skipif(not cpu_has_bfloat16(), reason="this CPU has no bfloat16 instructions")
def test_bfloat16_vectors_agree_with_float32(embedder: TextEmbedder) -> None:
    fast = TextEmbedder(EmbeddingConfig(batch_size=2, device="cpu", precision="bfloat16"))
    assert fast.precision == "bfloat16"
    texts = [*TEXTS[:3], "a cat sleeping", "a small kitten napping", "tax law"]
    exact, approximate = embedder.encode(texts), fast.encode(texts)
    assert not np.array_equal(exact, approximate)  # the products did run in bfloat16
    np.testing.assert_allclose(np.linalg.norm(approximate, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(exact * approximate, axis=1)) > 0.9999


def test_precision_auto_follows_the_device_and_the_cpu_flags(tmp_path: Path) -> None:
    import torch

    from ml import embeddings

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_bfloat16(with_bf16) and not cpu_has_bfloat16(without)
    assert not cpu_has_bfloat16(tmp_path / "absent")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cuda) == "float16"
    expected = "bfloat16" if embeddings.cpu_has_bfloat16() else "float32"
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("float32", cpu) == "float32"
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_precision("float16", cpu)
    with pytest.raises(ValueError, match="embedding precision 'half'"):
        EmbeddingConfig(precision="half")
