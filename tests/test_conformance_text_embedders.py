"""Text embedders: every implementation through the same checks (see conformance_util.py).

MiniLM runs for real from its offline wheel, on ONNX Runtime (exported once into the shared test model cache) and
on PyTorch (the fallback when the export fails); each is built once per module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conformance_util import cases

from lookloop.models.text import HashingTextEmbedder, MiniLMEmbedder, TextEmbedder

IMPLEMENTATIONS: dict[str, Callable[[Path], TextEmbedder]] = {
    "hashing": lambda models: HashingTextEmbedder(),
    "minilm-onnx": lambda models: MiniLMEmbedder(models, backend="onnx"),
    "minilm-torch": lambda models: MiniLMEmbedder(models, backend="torch"),
}

SKIP: dict[str, dict[str, str]] = {}

QUESTIONS = ["how much does this cost", "what is the price of this", "describe the room around me",
             "这个多少钱？", "where did I park my car?"]


class _Built(dict[str, TextEmbedder]):
    """Each implementation built on first use, then reused by every check."""

    def __init__(self, models: Path) -> None:
        super().__init__()
        self.models = models

    def __missing__(self, key: str) -> TextEmbedder:
        self[key] = IMPLEMENTATIONS[key](self.models)
        return self[key]


@pytest.fixture(scope="module")
def built(model_dir: Path) -> dict[str, TextEmbedder]:
    return _Built(model_dir)


def check_describes_itself(emb: TextEmbedder) -> None:
    assert isinstance(emb.version, str) and emb.version
    assert isinstance(emb.dim, int) and emb.dim > 0


def check_shape_and_dtype(emb: TextEmbedder) -> None:
    x = emb.embed(QUESTIONS)
    assert x.shape == (len(QUESTIONS), emb.dim) and x.dtype == np.float32
    assert emb.embed([]).shape == (0, emb.dim)


def check_rows_are_unit_length(emb: TextEmbedder) -> None:
    x = emb.embed(QUESTIONS)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def check_empty_text_is_finite(emb: TextEmbedder) -> None:
    x = emb.embed(["", "   "])
    assert x.shape == (2, emb.dim) and np.all(np.isfinite(x))
    assert np.all(np.linalg.norm(x, axis=1) <= 1.0 + 1e-4)


def check_long_text_is_one_unit_row(emb: TextEmbedder) -> None:
    x = emb.embed(["remember that the spare key is under the blue flower pot by the door " * 40])
    assert x.shape == (1, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def check_deterministic(emb: TextEmbedder) -> None:
    np.testing.assert_allclose(emb.embed(QUESTIONS), emb.embed(QUESTIONS), atol=1e-6)


def check_batch_invariant(emb: TextEmbedder) -> None:
    batch = emb.embed(QUESTIONS)
    one_by_one = np.concatenate([emb.embed([q]) for q in QUESTIONS])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-4)
    np.testing.assert_allclose(emb.embed(QUESTIONS[::-1])[::-1], batch, atol=1e-4)


def check_paraphrase_is_nearer(emb: TextEmbedder) -> None:
    cost, price, room = emb.embed(QUESTIONS[:3])
    assert float(cost @ price) > float(cost @ room)


CHECKS = [
    check_describes_itself,
    check_shape_and_dtype,
    check_rows_are_unit_length,
    check_empty_text_is_finite,
    check_long_text_is_one_unit_row,
    check_deterministic,
    check_batch_invariant,
    check_paraphrase_is_nearer,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_text_embedder(impl: str, check: Callable[[TextEmbedder], None], built: dict[str, TextEmbedder]) -> None:
    check(built[impl])
