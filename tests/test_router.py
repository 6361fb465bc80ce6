"""Skill routers (conformance, corrections, persistence) and MiniLM's offline loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lookloop.models.text import HashingTextEmbedder, MiniLMEmbedder
from lookloop.skills.router import (
    OOS,
    SKILL_INTENTS,
    IntentRouter,
    KeywordRouter,
    Router,
    RouterFileError,
    build_skill_router,
    default_skill_router,
    load_seed_examples,
)

SRC = Path(__file__).resolve().parents[1] / "src"

CANONICAL = {
    "what is this?": "identify",
    "how much is it?": "price",
    "read this": "read",
    "translate that": "translate",
    "remember this is where I parked": "remember",
    "where did I park?": "recall",
    "take notes": "notes",
    "summarise the meeting": "notes",
    "what colour is this?": "colour",
    "describe what you see": "describe",
    "这是什么？": "identify",
    "这个多少钱？": "price",
}
NONSENSE = ["zxqv blorp fnord", "qwpoeiruty zmxncbv"]
OUT_OF_SCOPE = ["who won the football match yesterday", "please transfer fifty dollars to my savings account"]

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    def _no_network(*args, **kwargs):
        raise RuntimeError("network access attempted")
    socket.socket.connect = _no_network
    socket.create_connection = _no_network
    from pathlib import Path
    from lookloop.models.text import MiniLMEmbedder
    emb = MiniLMEmbedder(Path(sys.argv[1]))
    x = emb.embed(["what is this?", "how much is it?"])
    print(json.dumps({"backend": emb.backend, "shape": list(x.shape)}))
    """
)


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """Exports MiniLM once, in a child process whose sockets all fail: proves loading never needs the network."""
    cache = tmp_path_factory.mktemp("models")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(SRC)
    env["HTTPS_PROXY"] = env["HTTP_PROXY"] = "http://127.0.0.1:9"
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(cache)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cache, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def minilm(minilm_cache: tuple[Path, dict[str, object]]) -> MiniLMEmbedder:
    return MiniLMEmbedder(minilm_cache[0])


@pytest.fixture(scope="session")
def hashing() -> HashingTextEmbedder:
    return HashingTextEmbedder()


# --- embedders --------------------------------------------------------------------------------------------


def test_minilm_loads_with_network_blocked(minilm_cache: tuple[Path, dict[str, object]]) -> None:
    cache, result = minilm_cache
    assert result["shape"] == [2, 384]
    assert result["backend"] == "onnx"
    assert list(cache.glob("*.onnx")), "the ONNX export is cached under the model cache dir"


def test_minilm_torch_and_onnx_agree(minilm: MiniLMEmbedder, minilm_cache: tuple[Path, dict[str, object]]) -> None:
    torch_emb = MiniLMEmbedder(minilm_cache[0], backend="torch")
    texts = ["where did I park?", "这个多少钱"]
    assert np.allclose(torch_emb.embed(texts), minilm.embed(texts), atol=1e-4)


def test_hashing_rejects_tiny_dim() -> None:
    with pytest.raises(ValueError):
        HashingTextEmbedder(dim=2)


# --- routers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hashing_router(hashing: HashingTextEmbedder) -> IntentRouter:
    return build_skill_router(hashing, None)


@pytest.fixture(scope="session")
def minilm_router(minilm: MiniLMEmbedder) -> IntentRouter:
    return build_skill_router(minilm, None)


@pytest.fixture(params=["keyword", "hashing_router", "minilm_router"])
def router(request: pytest.FixtureRequest) -> Router:
    if request.param == "keyword":
        return KeywordRouter()
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def test_router_conformance(router: Router) -> None:
    assert set(SKILL_INTENTS) <= set(router.intents)
    decisions = router.predict(list(CANONICAL))
    got = {q: d.intent for q, d in zip(CANONICAL, decisions, strict=True)}
    assert got == CANONICAL
    for d in decisions:
        assert not d.out_of_scope and 0.0 <= d.confidence <= 1.0
    for text in NONSENSE:
        d = router.route(text)
        assert d.intent is None and d.out_of_scope
    assert router.predict([]) == []


@pytest.mark.parametrize("name", ["keyword", "minilm_router"])
def test_out_of_scope_asks_go_to_none(name: str, request: pytest.FixtureRequest) -> None:
    router: Router = KeywordRouter() if name == "keyword" else request.getfixturevalue(name)
    for text in OUT_OF_SCOPE:
        assert router.route(text).intent is None, text


def test_scores_are_a_sorted_top_k(minilm_router: IntentRouter) -> None:
    d = minilm_router.route("how much is this bottle of wine")
    probs = [p for _, p in d.scores]
    assert len(d.scores) == minilm_router.top_k
    assert probs == sorted(probs, reverse=True)
    assert d.scores[0] == (d.intent, d.confidence)
    assert json.dumps(d.as_dict())


def test_seed_file_covers_every_skill() -> None:
    seeds = load_seed_examples()
    intents = {i for _, i in seeds}
    assert intents == {*SKILL_INTENTS, OOS}
    for intent in intents:
        texts = [t for t, i in seeds if i == intent]
        assert len(texts) >= 25, intent
        assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts), f"{intent} has no Chinese"


def test_learn_changes_a_route_at_once(hashing: HashingTextEmbedder) -> None:
    router = build_skill_router(hashing, None)
    text = "where is the thing I asked about earlier"
    target = "remember" if router.route(text).intent != "remember" else "describe"
    router.learn(text, target)
    d = router.route(text)
    assert d.intent == target and d.source == "memory"
    assert router.route("  WHERE is the thing I asked about earlier ").intent == target
    router.learn(text, None)  # a reviewer says: no skill fits this
    d = router.route(text)
    assert d.intent is None and d.out_of_scope
    # a brand-new intent can be taught too, and survives a refit
    router.learn("count the coins in my hand", "count")
    assert router.route("count the coins in my hand").intent == "count"
    assert "count" in router.intents
    router.refit()
    assert "count" in router.classes


def test_save_load_round_trip(tmp_path: Path, hashing: HashingTextEmbedder) -> None:
    router = build_skill_router(hashing, None)
    router.learn("ping the lighthouse", "describe")
    path = tmp_path / "router.npz"
    router.save(path)
    loaded = IntentRouter.load(path, hashing)
    texts = [*CANONICAL, *NONSENSE, "ping the lighthouse", "is this ripe"]
    assert loaded.predict(texts) == router.predict(texts)
    assert np.allclose(loaded.decision_scores(texts), router.decision_scores(texts), atol=1e-5)
    assert loaded.threshold == router.threshold

    with pytest.raises(RouterFileError):
        IntentRouter.load(path, HashingTextEmbedder(dim=256))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a router")
    with pytest.raises(RouterFileError):
        IntentRouter.load(bad, hashing)


def test_fit_rejects_bad_input(hashing: HashingTextEmbedder) -> None:
    router = IntentRouter(hashing)
    with pytest.raises(ValueError):
        router.fit(["a", "b"], ["x"])
    with pytest.raises(ValueError):
        router.fit([], [])
    with pytest.raises(ValueError):
        router.fit(["a", "b"], [None, OOS])
    with pytest.raises(RuntimeError):
        router.route("not fitted yet")


def test_single_intent_router_still_flags_nonsense(hashing: HashingTextEmbedder) -> None:
    texts = ["what colour is this", "which colour is it", "tell me the colour", "what color is my shirt"]
    router = IntentRouter(hashing).fit(texts, ["colour"] * len(texts))
    assert router.route("what colour is this").intent == "colour"


def test_default_skill_router_is_cached(tmp_path: Path, hashing: HashingTextEmbedder) -> None:
    settings = SimpleNamespace(model_cache_dir=tmp_path / "models", data_dir=tmp_path / "no-data")
    first = default_skill_router(settings, embedder=hashing)
    files = list((tmp_path / "models").glob("skill-router-*.npz"))
    assert len(files) == 1
    second = default_skill_router(settings, embedder=hashing)
    assert second.predict(list(CANONICAL)) == first.predict(list(CANONICAL))
