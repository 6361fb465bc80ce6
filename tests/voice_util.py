"""Helpers for the voice, SDK and simulator tests: spoken clips and a real server on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def spoken_wav(text: str, lead_s: float = 0.3, tail_s: float = 0.8, rate: int = 16_000) -> bytes:
    """``text`` said by espeak-ng, as 16-bit mono WAV with silence around it (like a push-to-talk clip)."""
    from lookloop.models.speech import decode_audio, encode_wav

    raw = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    audio = decode_audio(raw)  # 16 kHz float mono
    if rate != 16_000:
        from lookloop.models.speech import resample

        audio = resample(audio, 16_000, rate)
    pad = [np.zeros(int(s * rate), np.float32) for s in (lead_s, tail_s)]
    return encode_wav(np.concatenate([pad[0], audio, pad[1]]), rate)


def ffmpeg_convert(data: bytes, suffix: str, *args: str) -> bytes:
    """Re-encode audio bytes with ffmpeg (e.g. ``.webm`` with ``-c:a libopus``)."""
    with subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", *args, "-f", suffix.lstrip("."), "pipe:1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        out, err = proc.communicate(data, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {err.decode(errors='replace')}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The real app under uvicorn on a loopback port, which can be stopped and started again."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self._server = self._thread = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def small_app_system(tmp: Path, data_dir: Path, model_dir: Path, grocery: Any, **overrides: Any) -> Any:
    """A migrated small system (SMALL_CLASSES) in ``tmp``."""
    from conftest import build_small_system, make_settings

    return build_small_system(make_settings(tmp, data_dir, model_dir, **overrides), grocery, per_class=8)
