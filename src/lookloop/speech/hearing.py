"""Hearing a spoken question: decode the upload → trim to speech (VAD) → transcribe (Whisper, PocketSphinx)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lookloop.errors import BadInput, LookloopError, NotConfigured, UnsupportedMedia
from lookloop.models.asr import (
    SAMPLE_RATE,
    QuickWhisper,
    WhisperOptions,
    WhisperTranscriber,
    get_transcriber,
)
from lookloop.models.speech import decode_audio
from lookloop.models.vad import trim_to_speech

LANGUAGES = ("en", "zh")
log = logging.getLogger("lookloop.speech")


@dataclass
class Heard:
    """What the wearer said, how long the clip and its speech were, and the time each step took."""

    text: str
    language: str
    duration_s: float = 0.0
    speech_s: float = 0.0
    timings_ms: dict[str, float] = field(default_factory=dict)


def parse_language(raw: str | None) -> str | None:
    """The language the glasses sent (``en``, ``zh``), or None to detect it (empty or ``auto``)."""
    lang = (raw or "").strip().lower() or None
    if lang == "auto":
        return None
    if lang is not None and lang not in LANGUAGES:
        raise BadInput(f"language must be one of {', '.join(LANGUAGES)} (or empty to detect it)")
    return lang


def voice_transcriber(cache_dir: Path) -> QuickWhisper:
    """The transcriber of the voice path: ``QuickWhisper`` over Whisper base, greedy, few fallback temperatures.

    A spoken question is short and the wearer waits for the answer, so beam search is not worth its time.
    """
    options = WhisperOptions(beam_size=1, temperature=(0.0, 0.4, 0.8))
    return QuickWhisper(WhisperTranscriber(options, cache_dir=cache_dir))


class Hearing:
    """Turns uploaded audio into a question; the light PocketSphinx model stands in if Whisper cannot load."""

    def __init__(self, cache_dir: Path, max_audio_seconds: float) -> None:
        self.cache_dir = cache_dir
        self.max_audio_seconds = max_audio_seconds
        self._transcriber: QuickWhisper | None = None
        self._lock = threading.Lock()

    @property
    def transcriber(self) -> QuickWhisper:
        with self._lock:
            if self._transcriber is None:
                self._transcriber = voice_transcriber(self.cache_dir)
            return self._transcriber

    def warm(self) -> None:
        """Load Whisper now (joining its model file on first use) rather than on the first question.

        A Whisper that cannot load is no start-up error: questions then fall back as ``hear`` says.
        """
        try:
            self.transcriber.load()
        except (FileNotFoundError, RuntimeError) as exc:
            log.warning("Whisper is unavailable (%s); English questions fall back to PocketSphinx", exc)

    def hear(self, audio_bytes: bytes, language: str | None) -> Heard:
        """Decode → trim to speech → transcribe; ``BadInput`` when no speech is heard."""
        t0 = time.perf_counter()
        try:
            audio = decode_audio(audio_bytes, self.max_audio_seconds)
        except LookloopError:
            raise
        except ValueError as exc:  # some FFmpeg errors are ValueErrors that slip past the decoder's own mapping
            raise UnsupportedMedia("could not decode the audio: expected WAV, WebM, Ogg or MP3") from exc
        t1 = time.perf_counter()
        speech = trim_to_speech(audio)
        t2 = time.perf_counter()
        if speech.size < SAMPLE_RATE // 5:
            raise BadInput("no speech was heard in the audio clip; hold the button and speak")
        try:
            result = self.transcriber.transcribe(speech, language=language)
        except (FileNotFoundError, RuntimeError) as exc:
            if language not in (None, "en"):
                raise NotConfigured(f"speech recognition for {language!r} is unavailable: {exc}") from exc
            result = get_transcriber("pocketsphinx").transcribe(speech, language="en")
        t3 = time.perf_counter()
        return Heard(
            text=result.text.strip(),
            language=result.language,
            duration_s=round(len(audio) / SAMPLE_RATE, 3),
            speech_s=round(len(speech) / SAMPLE_RATE, 3),
            timings_ms={"decode": (t1 - t0) * 1000, "vad": (t2 - t1) * 1000, "asr": (t3 - t2) * 1000},
        )
