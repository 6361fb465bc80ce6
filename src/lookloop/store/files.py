"""Private files: everything lookloop keeps under ``var/`` (the database, frames, sealed originals, keys,
caches) is readable by the service's own user only: directories 0700, files 0600, whatever the umask."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _owned(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.getuid()
    except OSError:
        return False


def _tighten(path: Path, mode: int) -> None:
    """chmod to ``mode`` what this user owns (a shared, read-only cache of someone else's stays as it is)."""
    if _owned(path):
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter, created (with any missing parents, each 0700) when
    absent; an existing one of ours is tightened to 0700 too."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(d, PRIVATE_DIR)
        _tighten(d, PRIVATE_DIR)
    if not missing:
        _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Makes ``path`` exist as a file only its owner may read or write (an existing one is tightened to 0600)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    _tighten(path, PRIVATE_FILE)
    return path


def tighten_file(path: Path) -> None:
    """An existing file of ours made 0600 (after a library wrote it with the umask's mode)."""
    _tighten(path, PRIVATE_FILE)


def open_private(path: Path) -> BinaryIO:
    """``path`` opened for writing (truncated) as a 0600 file, its directory made private first."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    return os.fdopen(fd, "wb")


def write_atomic(path: Path, data: bytes) -> None:
    """Writes durably and privately: a 0600 temporary file, fsync, then an atomic rename, so a crash leaves the
    old file or the new, never half (and never a moment readable by others)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open_private(tmp) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
