"""The embedding cache in a directory several workers share: saves never tear the file, a torn one is rebuilt."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lookloop.models.embcache import EmbeddingCache


def test_workers_saving_one_cache_at_once_leave_a_whole_file(tmp_path: Path) -> None:
    caches = [EmbeddingCache(tmp_path, "v1", 64) for _ in range(4)]
    rng = np.random.default_rng(0)
    start = threading.Barrier(len(caches))

    def save(n: int, cache: EmbeddingCache) -> None:
        start.wait()
        for i in range(15):
            for j in range(200):
                cache.put(f"{n}-{i}-{j}", rng.normal(size=64).astype(np.float32))
            cache.save()

    threads = [threading.Thread(target=save, args=(n, c)) for n, c in enumerate(caches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(EmbeddingCache(tmp_path, "v1", 64)) == 15 * 200  # one worker's whole file, last writer wins
    assert not list(tmp_path.glob("*.tmp"))


def test_a_torn_cache_file_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "embeddings-v1.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip header, then nothing
    cache = EmbeddingCache(tmp_path, "v1", 8)
    assert len(cache) == 0
    cache.put("a", np.ones(8, dtype=np.float32))
    cache.save()
    assert len(EmbeddingCache(tmp_path, "v1", 8)) == 1
