"""Frames as content-addressed files beside the database, never as blobs in rows (0600 files in 0700
directories: ``store/files.py``)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lookloop.store.files import write_atomic

__all__ = ["FrameStore", "frame_id", "write_atomic"]

_SHA = re.compile(r"^[0-9a-f]{64}$")
_EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/bmp": ".bmp"}


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
