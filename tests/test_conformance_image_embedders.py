"""Image embedders: every implementation through the same checks on real Grocery photos (see conformance_util.py).

The real offline models run here (EfficientNet-Lite0 from its wheel, exported once into the shared test model
cache); each embedder is built once per module and the checks embed a handful of photos.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conformance_util import cases

from lookloop.catalog import GroceryDataset
from lookloop.imaging import decode_image
from lookloop.models.embedder import ImageEmbedder, TorchImageEmbedder, pretrained_embedder

IMPLEMENTATIONS: dict[str, Callable[[Path], ImageEmbedder]] = {
    # what the system serves: ONNX Runtime over the exported network
    "onnx-lite0": lambda models: pretrained_embedder(models, "lite0"),
    # the reference the export is checked against, and the fine-tuning starting point
    "torch-lite0": lambda models: TorchImageEmbedder("lite0"),
}

SKIP: dict[str, dict[str, str]] = {}

PRODUCTS = ("Banana", "Arla-Standard-Milk", "Red-Bell-Pepper")


@pytest.fixture(scope="module")
def photos(grocery: GroceryDataset) -> list[np.ndarray]:
    """One real val photo of each of three products (RGB), plus a second banana photo at the end."""
    val = grocery.split("val")
    paths = [next(i.path for i in val if i.label == name) for name in PRODUCTS]
    paths.append([i.path for i in val if i.label == "Banana"][1])
    return [decode_image(p.read_bytes(), max_bytes=1 << 30, max_pixels=1 << 30).rgb for p in paths]


class _Built(dict[str, ImageEmbedder]):
    """Each implementation built on first use, then reused by every check."""

    def __init__(self, models: Path) -> None:
        super().__init__()
        self.models = models

    def __missing__(self, key: str) -> ImageEmbedder:
        self[key] = IMPLEMENTATIONS[key](self.models)
        return self[key]


@pytest.fixture(scope="module")
def built(model_dir: Path) -> dict[str, ImageEmbedder]:
    return _Built(model_dir)


def check_describes_itself(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    assert isinstance(emb.version, str) and emb.version
    assert isinstance(emb.dim, int) and emb.dim > 0
    assert isinstance(emb.image_size, int) and emb.image_size >= 32


def check_shape_and_dtype(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    x = emb.embed(photos)
    assert x.shape == (len(photos), emb.dim) and x.dtype == np.float32
    empty = emb.embed([])
    assert empty.shape == (0, emb.dim)


def check_rows_are_unit_length(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    x = emb.embed(photos)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def check_deterministic(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    np.testing.assert_allclose(emb.embed(photos), emb.embed(photos), atol=1e-6)


def check_batch_invariant(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    batch = emb.embed(photos)
    one_by_one = np.concatenate([emb.embed([p]) for p in photos])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-4)


def check_any_frame_shape(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    # glasses frames are wide, crops are tall, thumbnails are tiny: each gives one unit row
    wide = cv2.resize(photos[0], (640, 360))
    tall = photos[1][:, 100:220]
    tiny = cv2.resize(photos[2], (8, 8))
    x = emb.embed([wide, tall, tiny])
    assert x.shape == (3, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def check_same_product_is_nearer(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    banana, milk, pepper, banana2 = emb.embed(photos)
    # a slightly smaller copy of a photo is nearly the same point; another product is farther
    smaller = emb.embed([cv2.resize(photos[0], (300, 300), interpolation=cv2.INTER_AREA)])[0]
    assert float(banana @ smaller) > 0.95
    assert float(banana @ banana2) > max(float(banana @ milk), float(banana @ pepper))


def check_rejects_a_frame_that_is_not_rgb(emb: ImageEmbedder, photos: list[np.ndarray]) -> None:
    grey = cv2.cvtColor(photos[0], cv2.COLOR_RGB2GRAY)
    with pytest.raises(ValueError, match="RGB"):
        emb.embed([grey])


CHECKS = [
    check_describes_itself,
    check_shape_and_dtype,
    check_rows_are_unit_length,
    check_deterministic,
    check_batch_invariant,
    check_any_frame_shape,
    check_same_product_is_nearer,
    check_rejects_a_frame_that_is_not_rgb,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_image_embedder(impl: str, check: Callable[[ImageEmbedder, list[np.ndarray]], None],
                        built: dict[str, ImageEmbedder], photos: list[np.ndarray]) -> None:
    check(built[impl], photos)


def test_onnx_matches_the_torch_reference(built: dict[str, ImageEmbedder], photos: list[np.ndarray]) -> None:
    np.testing.assert_allclose(built["onnx-lite0"].embed(photos), built["torch-lite0"].embed(photos), atol=1e-3)
