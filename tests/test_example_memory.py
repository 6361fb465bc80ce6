"""The example memory's nearest-neighbour search: exact below a size, a graph above, removal that removes."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from lookloop.catalog import GroceryDataset
from lookloop.loop.learner import ExampleMemory, IdentifyModel
from lookloop.models.embcache import EmbeddingCache, embed_paths
from lookloop.models.embedder import pretrained_embedder


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near(rng: np.random.Generator, x: np.ndarray, noise: float) -> np.ndarray:
    q = x + noise * rng.standard_normal(x.shape).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def at_cosine(rng: np.random.Generator, x: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Unit vectors at the given cosine to the rows of ``x`` (a re-taken photo of a labelled product)."""
    r = unit(rng, len(x), x.shape[1])
    r -= np.einsum("ij,ij->i", r, x)[:, None] * x
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return (cos[:, None] * x + np.sqrt(1 - cos[:, None] ** 2) * r).astype(np.float32)


def filled(n: int, dim: int, *, seed: int = 0, **kw: int) -> tuple[ExampleMemory, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = unit(rng, n, dim)
    mem = ExampleMemory(dim, background=False, **kw)  # type: ignore[arg-type]
    mem.add(x, [f"c{i % 7}" for i in range(n)], [f"k{i}" for i in range(n)])
    mem.settle()
    return mem, x


def test_small_sets_match_the_exact_scan() -> None:
    rng = np.random.default_rng(1)
    mem, x = filled(500, 32)
    q = unit(rng, 40, 32)
    rows, sims = mem.nearest(q)
    exact = q @ x.T
    assert rows.shape == (40,) and sims.shape == (40,)
    assert np.array_equal(rows, exact.argmax(axis=1))
    assert np.allclose(sims, exact.max(axis=1), atol=1e-5)
    rows5, sims5 = mem.nearest(q, k=5)
    assert rows5.shape == (40, 5)
    assert np.array_equal(rows5, np.argsort(-exact, axis=1)[:, :5])
    assert np.all(np.diff(sims5, axis=1) <= 1e-6)  # best first


def test_graph_search_matches_the_exact_scan_on_random_vectors() -> None:
    """Above the threshold a graph answers: recall@1 ≥ 0.99 against the exact scan on 20,000 random unit
    vectors, for random queries and for queries near a stored example."""
    rng = np.random.default_rng(2)
    mem, x = filled(20_000, 16, exact_below=1000)
    assert mem.searched_by_graph
    q = np.concatenate([unit(rng, 500, 16), at_cosine(rng, x[rng.choice(len(x), 500)], rng.uniform(0.6, 0.99, 500))])
    rows, sims = mem.nearest(q)
    assert float(np.mean(rows == (q @ x.T).argmax(axis=1))) >= 0.99
    # The similarity returned is the exact cosine of the row returned, whatever proposed it.
    assert np.allclose(sims, np.einsum("ij,ij->i", q, x[rows]), atol=1e-5)


def test_graph_search_matches_the_exact_scan_on_photo_embeddings(
    grocery: GroceryDataset, model_dir: Path
) -> None:
    """The served case: 1280-dimensional photo embeddings, searched in the graph's smaller projected space.
    10,000 examples near the real ones; queries are other takes of stored examples (cosine 0.75 to 0.98)."""
    emb = pretrained_embedder(model_dir)
    paths = [i.path for i in grocery.split("train")]
    real = embed_paths(EmbeddingCache(model_dir, emb.version, emb.dim), emb, paths)
    rng = np.random.default_rng(6)
    x = at_cosine(rng, real[rng.integers(0, len(real), 10_000)], rng.uniform(0.9, 0.99, 10_000))
    mem = ExampleMemory(emb.dim, exact_below=1000, background=False)
    mem.add(x, ["p"] * len(x), [str(i) for i in range(len(x))])
    mem.settle()
    assert mem.searched_by_graph
    q = at_cosine(rng, x[rng.choice(len(x), 500)], rng.uniform(0.75, 0.98, 500))
    rows, _ = mem.nearest(q)
    assert float(np.mean(rows == (q @ x.T).argmax(axis=1))) >= 0.99


def test_new_examples_are_found_at_once_and_merged_later() -> None:
    rng = np.random.default_rng(3)
    mem, x = filled(3000, 32, exact_below=1000, merge_every=500)
    extra = unit(rng, 200, 32)
    mem.add(extra, ["new"] * 200, [f"n{i}" for i in range(200)])  # fewer than merge_every: scanned exactly
    rows, sims = mem.nearest(extra)
    assert {mem.label_at(int(r)) for r in rows} == {"new"}
    assert np.allclose(sims, 1.0, atol=1e-5)
    more = unit(rng, 400, 32)
    mem.add(more, ["more"] * 400, [f"m{i}" for i in range(400)])  # now merged into the graph
    rows, _ = mem.nearest(more)
    assert {mem.label_at(int(r)) for r in rows} == {"more"}


@pytest.mark.parametrize("n", [300, 5000])
def test_removed_examples_are_gone(n: int) -> None:
    rng = np.random.default_rng(4)
    mem, x = filled(n, 32, exact_below=1000)
    gone = [f"k{i}" for i in range(0, n, 3)]
    assert mem.remove(gone) == len(gone)
    assert mem.remove(gone) == 0
    assert len(mem) == n - len(gone)
    assert not set(gone) & set(mem.keys)
    assert len(mem.labels) == len(mem) and mem.matrix.shape == (len(mem), 32)
    removed_rows = np.arange(0, n, 3)
    rows, _ = mem.nearest(x[removed_rows])  # asking with the very embeddings removed
    assert not set(rows.tolist()) & set(removed_rows.tolist())
    keep = np.setdiff1d(np.arange(n), removed_rows)
    assert float(np.mean(mem.nearest(near(rng, x[keep[:200]], 0.02))[0] == keep[:200])) >= 0.99
    # The removed embeddings are not kept anywhere the memory can return them from.
    assert not np.any(np.all(np.isclose(mem.matrix[:, None, :], x[removed_rows[:50]][None]), axis=2))
    if mem.searched_by_graph:
        assert mem.graph_rows().size == len(mem)  # a third removed: the graph was rebuilt without them


def test_a_key_labelled_again_keeps_only_the_newest_label() -> None:
    mem, x = filled(50, 16)
    mem.add(x[:1], ["relabelled"], ["k0"])
    assert len(mem) == 50
    rows, sims = mem.nearest(x[:1])
    assert mem.label_at(int(rows[0])) == "relabelled" and sims[0] == pytest.approx(1.0, abs=1e-5)
    assert mem.labels.count("relabelled") == 1


def test_empty_memory_and_labels() -> None:
    mem = ExampleMemory(8)
    rows, sims = mem.nearest(np.ones((2, 8), dtype=np.float32), k=3)
    assert rows.shape == (2, 3) and (rows == -1).all() and (sims == 0).all()
    mem.add(np.eye(8, dtype=np.float32)[:2], ["a", "b"], ["1", "2"])
    mem.remove(["1"])
    assert mem.label_set() == {"b"}
    rows, _ = mem.nearest(np.eye(8, dtype=np.float32)[:1], k=3)
    assert rows.tolist() == [[1, -1, -1]]


def test_examples_merged_after_removals_are_found() -> None:
    """Removed examples stay in the graph, erased, until many are removed: examples merged into it
    meanwhile, and those already in it, are still found by a search for their very embedding."""
    rng = np.random.default_rng(7)
    mem, x = filled(2000, 32, exact_below=1500, merge_every=1500)
    mem.remove([f"k{i}" for i in range(1700, 2000)])  # 15%: too few for a rebuild
    new = unit(rng, 1500, 32)
    mem.add(new, ["new"] * 1500, [f"n{i}" for i in range(1500)])
    assert mem.graph_rows().size == 3500  # merged into the graph that holds the removed rows
    rows, _ = mem.nearest(np.concatenate([x[:1700], new]))
    assert rows.tolist() == [*range(1700), *range(2000, 3500)]


def test_examples_removed_while_a_merge_reads_them_stay_out_of_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Examples removed after a background merge took its snapshot, before it read them, are left out of
    the graph; the examples merged with them, and those already in it, are still found."""
    rng = np.random.default_rng(8)
    mem = ExampleMemory(32, exact_below=1500, merge_every=1500)
    x = unit(rng, 2000, 32)
    mem.add(x, ["a"] * 2000, [f"k{i}" for i in range(2000)])
    mem.settle()
    clone_index, removed = faiss.clone_index, threading.Event()

    def removal_meanwhile(index: object) -> object:
        if not removed.is_set():  # the merge copies the graph after its snapshot, before reading the rows
            removed.set()
            mem.remove([f"n{i}" for i in range(0, 1500, 3)])
        return clone_index(index)

    monkeypatch.setattr(faiss, "clone_index", removal_meanwhile)
    new = unit(rng, 1500, 32)
    mem.add(new, ["new"] * 1500, [f"n{i}" for i in range(1500)])
    mem.settle()
    assert removed.is_set() and len(mem) == 3000
    kept = [i for i in range(1500) if i % 3]
    rows, _ = mem.nearest(np.concatenate([x, new[kept]]))
    assert rows.tolist() == [*range(2000), *(2000 + i for i in kept)]
    assert mem.graph_rows().size == 3000  # the removed examples never went in


def test_reads_go_on_while_examples_are_added_and_removed() -> None:
    """Searches never fail nor return a removed or half-added example while a label stream is learned."""
    rng = np.random.default_rng(5)
    dim = 32
    mem = ExampleMemory(dim, exact_below=1500, merge_every=300)  # graph builds in the background
    base = unit(rng, 1000, dim)
    mem.add(base, ["base"] * 1000, [f"b{i}" for i in range(1000)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                rows, sims = mem.nearest(near(rng, base[:20], 0.01), k=3)
                for r in rows.ravel():
                    assert r == -1 or mem.label_at(int(r)) in {"base", "new"}
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(40):
        mem.add(unit(rng, 100, dim), ["new"] * 100, [f"n{i}-{j}" for j in range(100)])
        mem.remove([f"n{i}-{j}" for j in range(0, 100, 2)])
    stop.set()
    for t in readers:
        t.join()
    mem.settle()
    assert not errors
    assert mem.searched_by_graph and len(mem) == 1000 + 40 * 50
    rows, _ = mem.nearest(base[:50])
    assert rows.tolist() == list(range(50))


def test_identify_model_labels_come_from_the_memory_and_the_head() -> None:
    model = IdentifyModel(4)
    model.learn(np.eye(4, dtype=np.float32)[:2], ["b", "a"], ["1", "2"])
    assert model.labels() == ["a", "b"]
    model.forget(["2"])
    assert model.labels() == ["b"]
