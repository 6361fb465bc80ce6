"""Frames as content-addressed files beside the database, never as blobs in rows."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

_SHA = re.compile(r"^[0-9a-f]{64}$")
_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/bmp": ".bmp"}


def write_atomic(path: Path, data: bytes) -> None:
    """Writes durably: fsync, then an atomic rename, so a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def frame_id(owner: str, data: bytes) -> str:
    """The id of an upload: its bytes *and* the device that sent it. The same bytes from two wearers are two
    frames, so consent, kept originals and deletion stay per upload; a retry from one device is one frame."""
    return hashlib.sha256(b"lookloop-frame\0" + owner.encode() + b"\0" + data).hexdigest()


class FrameStore:
    """The one frame layout on disk: ``root/ab/abcdef…[suffix]``, ids checked before any path is built."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha: str, suffix: str = "") -> Path:
        """Where a frame (or its sealed/original variant) lives; a ValueError for anything but a sha256."""
        if not _SHA.match(sha):
            raise ValueError("not a frame id")
        return self.root / sha[:2] / f"{sha}{suffix}"

    def put(self, data: bytes, *, suffix: str = "") -> str:
        """Stores bytes durably (fsync + atomic rename) and returns their sha256."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path(sha, suffix)
        if path.exists():
            return sha
        write_atomic(path, data)
        return sha

    def get(self, sha: str, *, suffix: str = "") -> bytes:
        path = self.path(sha, suffix)
        if not path.exists():
            raise FileNotFoundError(sha)
        return path.read_bytes()

    def exists(self, sha: str, *, suffix: str = "") -> bool:
        return self.path(sha, suffix).exists()

    def delete(self, sha: str, *, suffix: str = "") -> bool:
        path = self.path(sha, suffix)
        if path.exists():
            path.unlink()
            return True
        return False

    @staticmethod
    def extension(media_type: str) -> str:
        return _EXT.get(media_type, ".bin")
