"""Voice in and out for the wearer: audio decoding plus the public speech API in one import.

``decode_audio`` turns uploaded bytes (WAV of any rate/channels/sample format, or WebM/Ogg/MP3/…
through PyAV) into float32 mono 16 kHz; the rest is re-exported from ``asr``, ``vad`` and ``tts``.
"""

from __future__ import annotations

import io
import struct
import wave
from math import gcd

import numpy as np

from lookloop.config import get_settings
from lookloop.errors import BadInput, TooLarge, UnsupportedMedia
from lookloop.models.asr import (
    SAMPLE_RATE,
    ModelIntegrityError,
    PocketsphinxTranscriber,
    Transcriber,
    Transcript,
    WhisperOptions,
    WhisperTranscriber,
    ensure_whisper_base,
    get_transcriber,
    normalize_text,
    word_error_rate,
)
from lookloop.models.tts import SpeechSynthesisError, synthesize
from lookloop.models.vad import SpeechEndpointer, VadEvent, speech_segments, trim_to_speech

__all__ = [
    "AudioTooLong",
    "BadAudio",
    "UndecodableAudio",
    "SAMPLE_RATE",
    "ModelIntegrityError",
    "PocketsphinxTranscriber",
    "SpeechEndpointer",
    "SpeechSynthesisError",
    "Transcriber",
    "Transcript",
    "VadEvent",
    "WhisperOptions",
    "WhisperTranscriber",
    "decode_audio",
    "encode_wav",
    "ensure_whisper_base",
    "get_transcriber",
    "normalize_text",
    "speech_segments",
    "synthesize",
    "transcribe_bytes",
    "trim_to_speech",
    "word_error_rate",
]



class BadAudio(BadInput, ValueError):
    """Audio bytes that cannot be used (HTTP 422); also a ``ValueError``."""


class UndecodableAudio(UnsupportedMedia, ValueError):
    """Bytes that are no audio format we read (HTTP 415)."""


class AudioTooLong(TooLarge, ValueError):
    """Audio longer than ``settings.max_audio_seconds`` (HTTP 413)."""


_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from ``rate`` to ``target`` Hz."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # slow to import: loaded on first use

    g = gcd(rate, target)
    return np.asarray(resample_poly(audio, target // g, rate // g), dtype=np.float32)


def _parse_wav(data: bytes, max_seconds: float) -> np.ndarray:
    # Own parser: the stdlib ``wave`` module rejects float and WAVE_FORMAT_EXTENSIBLE files.
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    pcm: bytes | None = None
    while pos + 8 <= len(data):
        cid, size = struct.unpack("<4sI", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise BadAudio("WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            # Streaming writers (espeak-ng --stdout, browsers) leave a placeholder size: take what is there.
            pcm = data[pos + 8 : pos + 8 + min(size, len(data) - pos - 8)]
            break
        pos += 8 + size + (size & 1)
    if fmt is None or pcm is None:
        raise BadAudio("WAV file has no fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or not 1000 <= rate <= 384_000:
        raise BadAudio(f"WAV header is implausible: {channels} channels at {rate} Hz")
    width = bits // 8
    kinds = {(_WAVE_FORMAT_PCM, 8), (_WAVE_FORMAT_PCM, 16), (_WAVE_FORMAT_PCM, 24), (_WAVE_FORMAT_PCM, 32),
             (_WAVE_FORMAT_FLOAT, 32), (_WAVE_FORMAT_FLOAT, 64)}
    if (tag, bits) not in kinds:
        raise UndecodableAudio(f"unsupported WAV sample format (format tag {tag}, {bits} bits)")
    frames = len(pcm) // (width * channels)
    if frames / rate > max_seconds:
        raise AudioTooLong(f"audio is {frames / rate:.1f} s long; the limit is {max_seconds:.0f} s")
    pcm = pcm[: frames * width * channels]
    if tag == _WAVE_FORMAT_FLOAT:
        samples = np.frombuffer(pcm, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:
        samples = (np.frombuffer(pcm, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    elif bits == 24:
        b = np.frombuffer(pcm, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8  # sign-extend 24 -> 32 bits
        samples = ints.astype(np.float32) / 8_388_608.0
    else:
        samples = np.frombuffer(pcm, dtype="<i4").astype(np.float32) / 2_147_483_648.0
    mono = samples.reshape(-1, channels).mean(axis=1)
    return resample(mono, rate)


def _decode_with_av(data: bytes, max_seconds: float) -> np.ndarray:
    import av  # slow to import: loaded on first use

    chunks: list[np.ndarray] = []
    total = 0
    limit = int(max_seconds * SAMPLE_RATE)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    chunks.append(arr)
                    total += len(arr)
                if total > limit:
                    raise AudioTooLong(f"audio is longer than the limit of {max_seconds:.0f} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (BadAudio, UndecodableAudio, AudioTooLong):
        raise
    except Exception as exc:  # PyAV raises many FFmpeg error types (some are ValueErrors): all mean "not audio"
        kind = type(exc).__name__
        raise UndecodableAudio(f"could not decode audio ({kind}): expected WAV, WebM, Ogg or MP3") from exc
    if not chunks:
        raise BadAudio("the audio stream holds no samples")
    return np.concatenate(chunks).astype(np.float32)


def decode_audio(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode uploaded audio bytes to float32 mono 16 kHz in [-1, 1].

    Raises ``BadAudio`` (422), ``UndecodableAudio`` (415) or ``AudioTooLong`` (413), all ``ValueError``
    and ``lookloop.errors.BadInput``, with a message fit for the reply (limit: ``max_seconds``,
    default ``settings.max_audio_seconds``).
    """
    limit = float(max_seconds if max_seconds is not None else get_settings().max_audio_seconds)
    if not data:
        raise BadAudio("no audio: the upload is empty")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        audio = _parse_wav(data, limit)
    else:
        audio = _decode_with_av(data, limit)
    if audio.size == 0:
        raise BadAudio("the audio holds no samples")
    if len(audio) > limit * SAMPLE_RATE + SAMPLE_RATE // 10:
        raise AudioTooLong(f"audio is {len(audio) / SAMPLE_RATE:.1f} s long; the limit is {limit:.0f} s")
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    clipped: np.ndarray = np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)
    return clipped


def encode_wav(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV bytes from float samples in [-1, 1]."""

    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def transcribe_bytes(data: bytes, language: str | None = None, model: str = "whisper") -> Transcript:
    """Decode uploaded audio, trim it to speech and transcribe it (``ValueError`` on bad audio)."""
    audio = decode_audio(data)
    speech = trim_to_speech(audio)
    if speech.size == 0:
        lang = language or "en"
        return Transcript("", lang, len(audio) / SAMPLE_RATE)
    result = get_transcriber(model).transcribe(speech, language=language)
    return Transcript(result.text, result.language, len(audio) / SAMPLE_RATE)
