"""``lookloop bench latency`` on a tiny sample: every figure, the figures at scale, and a warm server start."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.progress import Progress

from lookloop.bench import latency
from lookloop.catalog import GroceryDataset
from lookloop.config import get_settings
from lookloop.server.app import create_app
from lookloop.system import Lookloop


@pytest.fixture
def test_model_cache(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The benchmark reads the operator's settings: point their model cache at the suite's."""
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_latency_figures_on_a_tiny_sample(grocery: GroceryDataset, test_model_cache: None) -> None:
    val = [i.path for i in grocery.split("val")][:4]
    figures = latency.run_latency(val, val[:1], Progress(disable=True), at_scale=6000)
    for key in ("identify_p50_ms", "identify_p95_ms", "read_p50_ms", "model_only_identify_p50_ms",
                "inprocess_identify_p50_ms", "http_overhead_ratio", "identify_p50_ms_at_300k", "growth_ratio_300k"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["examples"] < 6000 <= figures["examples_at_scale"]  # the big memory searched by its graph
    assert figures["growth_ratio_300k"] == pytest.approx(
        figures["identify_p50_ms_at_300k"] / figures["identify_p50_ms"])


def test_the_benchmark_server_serves_only_after_its_warm_start(small_system: Lookloop) -> None:
    """A first run in an empty var/ exports models on warm-up: no ask may be timed (or time out) before it."""
    warmed: list[float] = []

    def slow_warm() -> None:
        time.sleep(1.0)  # an ONNX export on a first run
        warmed.append(time.monotonic())

    small_system.warm = slow_warm  # type: ignore[method-assign]
    with latency._Server(create_app(system=small_system, warm=True)) as url:
        assert warmed, "the server listened before its warm start had run"
        assert httpx.get(url + "/healthz/ready", timeout=10).status_code == 200
