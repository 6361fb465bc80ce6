"""Encryption at rest for unredacted frames: AES-256-GCM, key from settings or generated once (0600)."""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lookloop.config import Settings, get_settings
from lookloop.errors import LookloopError
from lookloop.store.files import private_dir, tighten_file

MAGIC = b"LLE1"  # format marker + version, so a later scheme can be told apart
_NONCE = 12
KEY_FILE = "frame.key"


class DecryptionError(LookloopError):
    """Ciphertext that is not ours, was altered, or was sealed with another key."""

    status_code = 500


class FrameKeyError(LookloopError):
    """A configured key that is not a base64 32-byte key."""

    status_code = 500


def generate_key() -> str:
    """A new random key, urlsafe base64 (put it in ``LOOKLOOP_FRAME_KEY``)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def parse_key(text: str) -> bytes:
    try:
        data = text.strip().encode("ascii")
        # Strict: a typo must not silently decode to some other key.
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise FrameKeyError("the frame key is not valid base64") from exc
    if len(raw) != 32:
        raise FrameKeyError(f"the frame key must be 32 bytes (AES-256), got {len(raw)}")
    return raw


def key_dir_for(settings: Settings) -> Path:
    """The directory of the generated frame key (``Settings.key_dir``, default ``var/keys``), refused when it
    would put the key among the frames or beside the database file, where a copy of them would carry it."""
    key_dir = settings.resolved_key_dir
    frames = settings.frames_dir.resolve()
    if key_dir == frames or key_dir.is_relative_to(frames):
        raise FrameKeyError(f"the frame key must not be kept inside the frames directory ({frames})")
    url = settings.resolved_database_url
    if url.startswith("sqlite:///") and key_dir == Path(url.split("///", 1)[1].split("?", 1)[0]).resolve().parent:
        raise FrameKeyError("the frame key must not be kept beside the database file: set LOOKLOOP_KEY_DIR")
    return key_dir


def load_or_create_key(key_dir: Path) -> bytes:
    """Reads ``key_dir/frame.key``, creating it once with mode 0600 (directory 0700) if missing; an existing
    key and its directory are tightened to those modes too."""
    path = key_dir / KEY_FILE
    private_dir(key_dir)
    if path.exists():
        tighten_file(path)
    else:
        try:
            # O_EXCL: two processes starting at once must not write two different keys.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(generate_key() + "\n")
    return parse_key(path.read_text())


_cache: dict[str, bytes] = {}
_lock = threading.Lock()


def default_key() -> bytes:
    """The key from ``Settings.frame_key``, else ``key_dir/frame.key`` (generated on first use)."""

    settings = get_settings()
    configured = getattr(settings, "frame_key", "")
    if configured:
        return parse_key(configured)
    key_dir = key_dir_for(settings)
    with _lock:
        cache_key = str(key_dir)
        if cache_key not in _cache:
            _cache[cache_key] = load_or_create_key(key_dir)
        return _cache[cache_key]


def encrypt_bytes(data: bytes, key: bytes | None = None, *, aad: bytes = b"") -> bytes:
    """``MAGIC | nonce | ciphertext+tag``. ``aad`` (e.g. the frame id) is authenticated, not stored."""
    k = key if key is not None else default_key()
    nonce = os.urandom(_NONCE)
    return MAGIC + nonce + AESGCM(k).encrypt(nonce, bytes(data), aad or None)


def decrypt_bytes(blob: bytes, key: bytes | None = None, *, aad: bytes = b"") -> bytes:
    """Inverse of ``encrypt_bytes``; raises ``DecryptionError`` on tampering or a wrong key."""
    if len(blob) < len(MAGIC) + _NONCE + 16 or not blob.startswith(MAGIC):
        raise DecryptionError("not an encrypted lookloop frame (bad header or truncated)")
    k = key if key is not None else default_key()
    nonce = blob[len(MAGIC) : len(MAGIC) + _NONCE]
    try:
        return AESGCM(k).decrypt(nonce, blob[len(MAGIC) + _NONCE :], aad or None)
    except InvalidTag as exc:
        raise DecryptionError(
            "the encrypted frame failed its integrity check: it was altered or sealed with another key"
        ) from exc
