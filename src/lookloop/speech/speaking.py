"""Spoken answers: text → sentences → WAV chunks, synthesised in the background and streamed as they come.

The first sentence is heard while the rest are still being synthesised, so the first audio byte does not
wait for the whole answer to be spoken. Jobs are kept by unguessable token for ``SPEECH_TTL_S``.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
import wave
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from lookloop.errors import NotConfigured, NotFound
from lookloop.models.tts import synthesize

SPEECH_TTL_S = 600.0
SPEECH_MAX_JOBS = 256

Synthesize = Callable[[str, str], bytes]


def split_sentences(text: str) -> list[str]:
    """Sentences to speak one by one (the first is heard while the rest are synthesised)."""
    parts = re.split(r"(?<=[.!?;])\s+|(?<=[。！？；])\s*|\n+", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def speech_language(text: str) -> str:
    """The language to speak an answer in: skills answer in English; Chinese text (a human's) in Chinese."""
    return "zh" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"


def _wav_parts(wav_bytes: bytes) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(io.BytesIO(wav_bytes), "rb") as w:
        return (w.getnchannels(), w.getsampwidth(), w.getframerate()), w.readframes(w.getnframes())


def wav_header(channels: int, width: int, rate: int, data_bytes: int | None) -> bytes:
    """A 44-byte PCM WAV header; ``data_bytes=None`` writes the open-ended sizes streaming players accept."""
    data = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return b"".join([
        b"RIFF", (36 + data).to_bytes(4, "little"), b"WAVEfmt ",
        (16).to_bytes(4, "little"), (1).to_bytes(2, "little"), channels.to_bytes(2, "little"),
        rate.to_bytes(4, "little"), (rate * channels * width).to_bytes(4, "little"),
        (channels * width).to_bytes(2, "little"), (width * 8).to_bytes(2, "little"),
        b"data", data.to_bytes(4, "little"),
    ])


@dataclass
class SpeechJob:
    """One answer being spoken: WAV bytes appear in ``chunks`` as sentences are synthesised."""

    text: str
    language: str
    synthesize: Synthesize = synthesize
    created: float = field(default_factory=time.monotonic)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    first_chunk_at: float | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        """Synthesise sentence by sentence (in a background thread); failures end up in ``error``."""
        try:
            sentences = split_sentences(self.text) or [self.text]
            fmt: tuple[int, int, int] | None = None
            for i, sentence in enumerate(sentences):
                params, pcm = _wav_parts(self.synthesize(sentence, self.language))
                if fmt is None:
                    fmt = params
                    # A one-sentence answer gets exact sizes; longer ones are streamed open-ended.
                    header = wav_header(*fmt, len(pcm) if len(sentences) == 1 else None)
                    self._add(header + pcm)
                elif params == fmt:
                    self._add(pcm)
                if i == 0:
                    self.first_chunk_at = time.monotonic()
        except (ValueError, RuntimeError) as exc:
            with self.cond:
                self.error = str(exc)
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def _add(self, chunk: bytes) -> None:
        with self.cond:
            self.chunks.append(chunk)
            self.cond.notify_all()

    def _has(self, n: int) -> bool:
        return len(self.chunks) >= n or self.done

    def first(self, timeout: float = 30.0) -> bytes | None:
        """The first chunk (waiting for it), or None if synthesis failed."""
        with self.cond:
            self.cond.wait_for(lambda: bool(self.chunks) or self.done, timeout)
            return self.chunks[0] if self.chunks else None

    def stream(self, timeout: float = 30.0) -> Iterator[bytes]:
        """Every chunk from the first, as each is synthesised."""
        sent = 0
        while True:
            with self.cond:
                want = sent + 1
                self.cond.wait_for(partial(self._has, want), timeout)
                if len(self.chunks) < want:
                    return
                chunk = self.chunks[sent]
            sent = want
            yield chunk

    def audio(self) -> Iterator[bytes]:
        """The WAV stream, once its first chunk exists; ``NotConfigured`` (503) when synthesis failed."""
        if self.first() is None:
            raise NotConfigured(f"speech is unavailable: {self.error or 'synthesis failed'}")
        return self.stream()


class SpeechJobs:
    """Answers being spoken, by unguessable token, kept ``SPEECH_TTL_S`` for the client to fetch."""

    def __init__(self, synthesize_fn: Synthesize = synthesize) -> None:
        self._synthesize = synthesize_fn
        self._jobs: OrderedDict[str, SpeechJob] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, text: str, language: str) -> str:
        """Start speaking ``text`` in the background; the token fetches it with ``get``."""
        job = SpeechJob(text, language, self._synthesize)
        token = secrets.token_urlsafe(18)
        with self._lock:
            now = time.monotonic()
            while self._jobs and (
                len(self._jobs) >= SPEECH_MAX_JOBS or now - next(iter(self._jobs.values())).created > SPEECH_TTL_S
            ):
                self._jobs.popitem(last=False)
            self._jobs[token] = job
        threading.Thread(target=job.run, daemon=True, name="lookloop-tts").start()
        return token

    def get(self, token: str) -> SpeechJob:
        """The job behind ``token``; ``NotFound`` once it has expired."""
        with self._lock:
            job = self._jobs.get(token)
        if job is None or time.monotonic() - job.created > SPEECH_TTL_S:
            raise NotFound("no such speech (it expires after 10 minutes)")
        return job
