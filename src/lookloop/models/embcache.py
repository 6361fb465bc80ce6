"""A content-addressed cache of image embeddings, so restarts and benchmarks embed each image once."""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookloop.store.files import open_private

if TYPE_CHECKING:
    from lookloop.models.embedder import ImageEmbedder

ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RecentEmbeddings:
    """The embeddings of the latest ``capacity`` asks, in memory only: a label for one of them soon after needs
    no second forward pass, and a worker's memory does not grow with every ask it ever answered."""

    def __init__(self, version: str, capacity: int) -> None:
        self.version = version
        self.capacity = capacity
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, key: str, row: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._rows[key] = row.astype(np.float32)
            self._rows.move_to_end(key)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def discard(self, key: str) -> bool:
        with self._lock:
            return self._rows.pop(key, None) is not None


class EmbeddingCache:
    """sha256 of the image bytes → embedding row, persisted as one ``.npz`` per embedder version."""

    def __init__(self, directory: Path, version: str, dim: int) -> None:
        self.path = directory / f"embeddings-{version}.npz"
        self.version = version
        self.dim = dim
        self._rows: dict[str, np.ndarray] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    keys, x = data["keys"], data["x"]
                    self._rows = {str(k): x[i] for i, k in enumerate(keys)}
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                self._rows = {}  # a torn cache file is rebuilt, never trusted

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str) -> np.ndarray | None:
        return self._rows.get(key)

    def put(self, key: str, row: np.ndarray) -> None:
        with self._lock:
            self._rows[key] = row.astype(np.float32)
            self._dirty = True

    def discard(self, key: str) -> bool:
        """Forgets one embedding (delete-my-data); True when it was cached."""
        with self._lock:
            found = self._rows.pop(key, None) is not None
            self._dirty = self._dirty or found
            return found

    def embed_files(
        self,
        paths: Sequence[Path],
        embed: Callable[[list[np.ndarray]], np.ndarray],
        *,
        batch: int = 16,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings for image files, computing only those not cached yet."""
        import cv2  # OpenCV's native libraries load on first use

        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        todo: list[tuple[int, str, np.ndarray]] = []

        def flush() -> None:
            if not todo:
                return
            x = embed([img for _, _, img in todo])
            for (i, key, _), row in zip(todo, x, strict=True):
                out[i] = row
                self.put(key, row)
            if progress:
                progress(len(todo))
            todo.clear()

        for i, path in enumerate(paths):
            data = Path(path).read_bytes()
            key = content_key(data)
            row = self.get(key)
            if row is not None:
                out[i] = row
                if progress:
                    progress(1)
                continue
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{path} is not a readable image")
            todo.append((i, key, np.ascontiguousarray(bgr[:, :, ::-1])))
            if len(todo) >= batch:
                flush()
        flush()
        return out

    def save(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            keys = np.array(list(self._rows))
            x = np.stack(list(self._rows.values())) if self._rows else np.zeros((0, self.dim), np.float32)
            # A name of its own per process and thread: workers sharing the cache directory may save at once,
            # and each must replace the file whole, never interleave writes into one temporary file.
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            with open_private(tmp) as fh:  # embeddings of wearers' frames: 0600 in a 0700 directory
                np.savez(fh, keys=keys, x=x)
            os.replace(tmp, self.path)
            self._dirty = False


def embed_paths(
    cache: EmbeddingCache,
    embedder: ImageEmbedder,
    paths: Sequence[Path],
    *,
    progress: ProgressFn | None = None,
    what: str = "embedding images",
) -> np.ndarray:
    """Embeddings (n, dim) of image files, computing only those ``cache`` lacks, then saving it.

    ``progress`` is called as (what, done, total). The cache must be ``embedder``'s own: rows of another
    embedder would come back as if they were this one's.
    """
    if cache.version != embedder.version:
        raise ValueError(f"the embedding cache of {cache.version} cannot serve embedder {embedder.version}")
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(what, done, len(paths))

    x = cache.embed_files(paths, embedder.embed, progress=tick)
    cache.save()
    return x
