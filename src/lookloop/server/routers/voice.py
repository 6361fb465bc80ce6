"""Voice asks and speech out: ``POST /v1/asks/voice`` (audio + optional frame → spoken answer), ``/v1/tts``.

The voice path is VAD trim → speech to text → the same ask as ``POST /v1/asks`` (routing, skills,
escalation) → speech synthesis. Speech starts in the background the moment the answer is known, and
``audio_url`` streams it sentence by sentence, so the first audio byte does not wait for the whole
answer to be spoken.
"""

from __future__ import annotations

import io
import re
import secrets
import threading
import time
import wave
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from lookloop.domain import AskRecord
from lookloop.errors import BadInput, LookloopError, NotConfigured, NotFound, TooLarge, UnsupportedMedia
from lookloop.server.auth import Principal, ask_device_id, current_principal
from lookloop.server.deps import get_system
from lookloop.server.schemas import AskOut, ErrorOut
from lookloop.system import Lookloop

router = APIRouter(tags=["voice"])
System = Annotated[Lookloop, Depends(get_system)]
Caller = Annotated[Principal | None, Depends(current_principal)]
_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 415, 422, 503)
}
_PAGES = Path(__file__).resolve().parents[1] / "pages"
MAX_AUDIO_BYTES = 16 * 1024 * 1024
SPEECH_TTL_S = 600.0
SPEECH_MAX_JOBS = 256
LANGUAGES = ("en", "zh")


# -- speech out ---------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Sentences to speak one by one (the first is heard while the rest are synthesised)."""
    parts = re.split(r"(?<=[.!?;])\s+|(?<=[。！？；])\s*|\n+", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


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
    created: float = field(default_factory=time.monotonic)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    first_chunk_at: float | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def run(self) -> None:
        from lookloop.models.tts import synthesize

        try:
            sentences = split_sentences(self.text) or [self.text]
            fmt: tuple[int, int, int] | None = None
            for i, sentence in enumerate(sentences):
                params, pcm = _wav_parts(synthesize(sentence, self.language))
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


class SpeechJobs:
    """Answers being spoken, by unguessable id, kept ``SPEECH_TTL_S`` for the client to fetch."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, SpeechJob] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, text: str, language: str) -> str:
        job = SpeechJob(text, language)
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
        with self._lock:
            job = self._jobs.get(token)
        if job is None or time.monotonic() - job.created > SPEECH_TTL_S:
            raise NotFound("no such speech (it expires after 10 minutes)")
        return job


def speech_jobs(app: Any) -> SpeechJobs:
    jobs = getattr(app.state, "speech_jobs", None)
    if jobs is None:
        jobs = app.state.speech_jobs = SpeechJobs()
    return jobs


def _speech_language(text: str) -> str:
    # Skills answer in English; a Chinese answer (a human's, a backend's) is spoken in Chinese.
    return "zh" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"


def _audio_response(job: SpeechJob) -> StreamingResponse:
    first = job.first()
    if first is None:
        raise NotConfigured(f"speech is unavailable: {job.error or 'synthesis failed'}")

    def body() -> Iterator[bytes]:
        yield from job.stream()

    return StreamingResponse(body(), media_type="audio/wav", headers={"Cache-Control": "no-store"})


# -- speech in ----------------------------------------------------------------------------------------


@dataclass
class Heard:
    text: str
    language: str
    duration_s: float
    speech_s: float
    timings_ms: dict[str, float]


class QuickWhisper:
    """Whisper base for short spoken questions: the encoder sees a window fitted to the clip, not 30 s.

    Whisper's encoder always runs on a 30 s window, most of it padding for a five-word question; on two
    cores that window is most of the voice path's time. CTranslate2 takes a shorter window, so the clip is
    padded to ``min_window_s`` (on 40 speech-en clips, 15 s gave WER 0.340 against 0.347 for the full
    window at 2.4x the speed; 10 s fell into repetition loops) and decoded greedily. A garbled result
    (repetition loops: a high compression ratio) is decoded again by the full ``fallback``.
    """

    name = "whisper-quick"
    languages: tuple[str, ...] = ("en", "zh")

    def __init__(self, fallback: Any, min_window_s: float = 15.0) -> None:
        self.fallback = fallback  # a WhisperTranscriber: its model is shared, not loaded twice
        self.min_window_s = min_window_s

    def transcribe(self, audio: Any, language: str | None = None) -> Any:
        import ctranslate2
        import numpy as np
        from faster_whisper.tokenizer import Tokenizer

        from lookloop.models.asr import SAMPLE_RATE, Transcript

        duration = len(audio) / SAMPLE_RATE
        if duration + 1.0 > 30.0:
            return self.fallback.transcribe(audio, language=language)
        model = self.fallback._load()  # the process-wide faster-whisper model
        window = min(30.0, max(self.min_window_s, float(np.ceil(duration + 1.0))))
        padded = np.zeros(int(window * SAMPLE_RATE), np.float32)
        padded[: len(audio)] = audio
        frames = int(window * 100)
        features = np.ascontiguousarray(model.feature_extractor(padded)[:, :frames][None])
        encoded = model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        if language is None:
            # Detection on the short window mistook accented English for Chinese more often (12 vs 8 of 40
            # speech-en clips), so the language comes from the full window; glasses that know their
            # wearer's language send it and skip this pass.
            language = str(self.fallback.detect_language(audio))
        tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=language)
        prompt = self.fallback.options.prompts.get(language)
        previous = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())] if prompt else []
        tokens = [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        result = model.model.generate(
            encoded, [tokens], beam_size=1, max_length=min(224, 20 + int(12 * duration)),
            suppress_blank=True, suppress_tokens=[-1],
        )
        ids = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(ids).strip()
        if _looks_garbled(text):
            return self.fallback.transcribe(audio, language=language)
        return Transcript(text, language, duration)


def _looks_garbled(text: str) -> bool:
    import zlib

    data = text.encode("utf-8")
    # Whisper's own test for a decoding stuck in a loop: text that compresses too well.
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > 2.4


_TRANSCRIBERS: dict[str, Any] = {}
_TRANSCRIBER_LOCK = threading.Lock()


def voice_transcriber(system: Lookloop) -> Any:
    """The transcriber of the voice path: ``QuickWhisper`` over Whisper base (greedy, fallback temperatures)."""
    from lookloop.models.asr import WhisperOptions, WhisperTranscriber

    key = str(system.settings.model_cache_dir)
    with _TRANSCRIBER_LOCK:
        if key not in _TRANSCRIBERS:
            options = WhisperOptions(beam_size=1, temperature=(0.0, 0.4, 0.8))
            full = WhisperTranscriber(options, cache_dir=system.settings.model_cache_dir)
            _TRANSCRIBERS[key] = QuickWhisper(full)
        return _TRANSCRIBERS[key]


def hear(system: Lookloop, audio_bytes: bytes, language: str | None) -> Heard:
    """Decode → trim to speech → transcribe; the light PocketSphinx model stands in if Whisper cannot load."""
    from lookloop.models.speech import SAMPLE_RATE, decode_audio, get_transcriber, trim_to_speech

    t0 = time.perf_counter()
    try:
        audio = decode_audio(audio_bytes, system.settings.max_audio_seconds)
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
        result = voice_transcriber(system).transcribe(speech, language=language)
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


# -- schemas ------------------------------------------------------------------------------------------


class TranscriptOut(BaseModel):
    text: str
    language: str
    duration_s: float = Field(description="Length of the uploaded clip.")
    speech_s: float = Field(description="Length of the speech in it (VAD).")


class VoiceAskOut(BaseModel):
    ask: AskOut
    transcript: TranscriptOut
    audio_url: str | None = Field(description="The spoken answer (WAV, streamed); expires after 10 minutes.")
    timings_ms: dict[str, float]


class SpeakIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    language: str = Field(default="en", pattern="^(en|zh)$")


# -- handlers -----------------------------------------------------------------------------------------


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the {what} is over the limit of {limit} bytes")
    return data


def _voice_ask(
    system: Lookloop, audio: bytes, image: bytes | None, question: str | None, language: str | None,
    device_id: str, key: str | None, skill: str | None,
) -> tuple[AskRecord, Heard]:
    start = time.perf_counter()
    if key:
        existing = system.find_by_idempotency_key(key)
        if existing is not None:  # a resent ask: answer it again without listening again
            return existing, Heard(existing.question, language or "en", 0.0, 0.0, {})
    if question:
        heard = Heard(question.strip(), language or "en", 0.0, 0.0, {})
    else:
        heard = hear(system, audio, language)
        if not heard.text:
            raise BadInput("the speech could not be made out; please ask again")
    t = time.perf_counter()
    record = system.ask(heard.text, image, device_id=device_id, idempotency_key=key, skill=skill)
    heard.timings_ms["answer"] = (time.perf_counter() - t) * 1000
    heard.timings_ms["total"] = (time.perf_counter() - start) * 1000
    return record, heard


@router.post("/v1/asks/voice", response_model=VoiceAskOut, responses=_ERRORS, tags=["asks"],
             summary="Ask by voice: an audio clip (WAV, WebM, Ogg) and the camera frame; the answer is spoken")
async def voice_ask(
    request: Request,
    system: System,
    caller: Caller,
    audio: Annotated[UploadFile, File(description="The spoken question: WAV, WebM/Opus, Ogg, MP3")],
    image: Annotated[UploadFile | None, File(description="The camera frame (JPEG, PNG, WebP)")] = None,
    language: Annotated[str | None, Form(description="en or zh; empty: detected")] = None,
    question: Annotated[str | None, Form(max_length=500, description="Typed text to use instead of ASR")] = None,
    speak: Annotated[bool, Form(description="Synthesise the answer (audio_url)")] = True,
    skill: Annotated[str | None, Form(max_length=32)] = None,
    device_id: Annotated[str | None, Form(max_length=64)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> VoiceAskOut:
    lang = (language or "").strip().lower() or None
    if lang == "auto":
        lang = None
    if lang is not None and lang not in LANGUAGES:
        raise BadInput(f"language must be one of {', '.join(LANGUAGES)} (or empty to detect it)")
    who = ask_device_id(system, caller, device_id)
    clip = await _read(audio, MAX_AUDIO_BYTES, "audio clip")
    frame = await _read(image, system.settings.max_image_bytes, "image") if image is not None else None
    record, heard = await run_in_threadpool(
        _voice_ask, system, clip, frame, question, lang, who, idempotency_key, skill
    )
    audio_url = None
    if speak:
        text = record.final_answer or record.answer.text
        token = speech_jobs(request.app).start(text, _speech_language(text))
        audio_url = f"/v1/speech/{token}"
    return VoiceAskOut(
        ask=AskOut.of(record),
        transcript=TranscriptOut(text=heard.text, language=heard.language, duration_s=heard.duration_s,
                                 speech_s=heard.speech_s),
        audio_url=audio_url,
        timings_ms={k: round(v, 1) for k, v in heard.timings_ms.items()},
    )


@router.get("/v1/speech/{token}", responses=_ERRORS, response_class=StreamingResponse,
            summary="A voice answer's audio (WAV, streamed as it is synthesised)")
async def get_speech(request: Request, token: str) -> StreamingResponse:
    job = speech_jobs(request.app).get(token)
    return await run_in_threadpool(_audio_response, job)


def _check_speaker(system: Lookloop, caller: Principal | None) -> None:
    if caller is None and not system.settings.allow_anonymous_asks:
        from lookloop.errors import Unauthorized

        raise Unauthorized("speech needs a token: send 'Authorization: Bearer <token>'")


async def _speak(request: Request, text: str, language: str) -> StreamingResponse:
    if len(" ".join(text.split())) == 0:
        raise BadInput("nothing to say: the text is empty")
    job = speech_jobs(request.app).get(speech_jobs(request.app).start(text, language))
    try:
        return await run_in_threadpool(_audio_response, job)
    except LookloopError:
        raise
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


@router.get("/v1/tts", responses=_ERRORS, response_class=StreamingResponse,
            summary="Speak a text (WAV, streamed): e.g. a late human answer")
async def tts_get(
    request: Request, system: System, caller: Caller,
    text: Annotated[str, Query(min_length=1, max_length=2000)],
    language: Annotated[str, Query(pattern="^(en|zh)$")] = "en",
) -> StreamingResponse:
    _check_speaker(system, caller)
    return await _speak(request, text, language)


@router.post("/v1/tts", responses=_ERRORS, response_class=StreamingResponse,
             summary="Speak a text (WAV, streamed)")
async def tts_post(request: Request, system: System, caller: Caller, body: SpeakIn) -> StreamingResponse:
    _check_speaker(system, caller)
    return await _speak(request, body.text, body.language)


def mount_simulator_page(app: FastAPI) -> None:
    """The glasses simulator at /simulator (its scripts and style are served from /pages/)."""

    @app.get("/simulator", include_in_schema=False)
    def simulator_page() -> FileResponse:
        return FileResponse(_PAGES / "simulator.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
