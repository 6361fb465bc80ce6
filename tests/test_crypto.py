"""Encryption at rest for unredacted frames."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookloop.config import get_settings
from lookloop.privacy.crypto import (
    DecryptionError,
    FrameKeyError,
    decrypt_bytes,
    default_key,
    encrypt_bytes,
    generate_key,
    load_or_create_key,
    parse_key,
)


@pytest.fixture
def key() -> bytes:
    return parse_key(generate_key())


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("LOOKLOOP_FRAME_KEY", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def test_round_trip(key: bytes) -> None:
    frame = b"\xff\xd8\xff" + bytes(range(256)) * 40
    blob = encrypt_bytes(frame, key)
    assert frame not in blob and blob != encrypt_bytes(frame, key)  # fresh nonce every time
    assert decrypt_bytes(blob, key) == frame
    assert decrypt_bytes(encrypt_bytes(b"", key), key) == b""


def test_tampering_is_detected(key: bytes) -> None:
    blob = bytearray(encrypt_bytes(b"an unredacted frame", key))
    for pos in (4, 20, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(DecryptionError, match="integrity check"):
            decrypt_bytes(bytes(bad), key)


def test_wrong_key_truncation_and_foreign_data(key: bytes) -> None:
    blob = encrypt_bytes(b"frame", key)
    with pytest.raises(DecryptionError):
        decrypt_bytes(blob, parse_key(generate_key()))
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_bytes(blob[:10], key)
    with pytest.raises(DecryptionError, match="not an encrypted"):
        decrypt_bytes(b"\xff\xd8\xff" + b"x" * 64, key)


def test_associated_data_binds_the_frame_id(key: bytes) -> None:
    blob = encrypt_bytes(b"frame", key, aad=b"frame-1")
    assert decrypt_bytes(blob, key, aad=b"frame-1") == b"frame"
    with pytest.raises(DecryptionError):
        decrypt_bytes(blob, key, aad=b"frame-2")


def test_bad_keys_are_refused() -> None:
    with pytest.raises(FrameKeyError, match="32 bytes"):
        parse_key("c2hvcnQ=")
    with pytest.raises(FrameKeyError, match="base64"):
        parse_key("not base64 at all!!")


def test_key_file_is_created_once_with_private_permissions(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    first = load_or_create_key(key_dir)
    path = key_dir / "frame.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert load_or_create_key(key_dir) == first and len(first) == 32


def test_default_key_uses_var_dir_then_setting(fresh_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = default_key()
    assert (fresh_settings / "keys" / "frame.key").is_file()
    assert decrypt_bytes(encrypt_bytes(b"x"), generated) == b"x"
    configured = generate_key()
    monkeypatch.setenv("LOOKLOOP_FRAME_KEY", configured)
    get_settings.cache_clear()
    assert default_key() == parse_key(configured) != generated


def test_the_key_has_a_directory_of_its_own(tmp_path: Path) -> None:
    """LOOKLOOP_KEY_DIR puts the generated key apart (another volume, out of var/'s backups); it may never sit
    among the frames or beside the database file, where a copy of those would carry it along."""
    from lookloop.config import Settings
    from lookloop.privacy.storage import frame_key

    var = tmp_path / "var"
    default = Settings(var_dir=var)
    assert default.resolved_key_dir == (var / "keys").resolve()
    apart = Settings(var_dir=var, key_dir=tmp_path / "secrets" / "lookloop")
    key = frame_key(apart)
    path = tmp_path / "secrets" / "lookloop" / "frame.key"
    assert parse_key(path.read_text()) == key and not (var / "keys").exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FrameKeyError, match="frames"):
        frame_key(Settings(var_dir=var, key_dir=var / "frames" / "keys"))
    with pytest.raises(FrameKeyError, match="beside the database"):
        frame_key(Settings(var_dir=var, key_dir=var))


def test_default_key_follows_the_key_dir_setting(fresh_settings: Path, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("LOOKLOOP_KEY_DIR", str(tmp_path / "keys-apart"))
    get_settings.cache_clear()
    generated = default_key()
    assert parse_key((tmp_path / "keys-apart" / "frame.key").read_text()) == generated
    assert not (fresh_settings / "keys").exists()
