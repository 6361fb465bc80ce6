"""Voice asks and speech out: ``POST /v1/asks/voice`` (audio + optional frame → spoken answer), ``/v1/tts``.

The voice path (``lookloop.speech``) is VAD trim → speech to text → the same ask as ``POST /v1/asks``
(routing, skills, escalation) → speech synthesis. Speech starts in the background the moment the answer is
known, and ``audio_url`` streams it sentence by sentence.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse

from lookloop.errors import TooLarge
from lookloop.server.auth import Principal, current_principal
from lookloop.server.deps import ask_threads, get_access, get_system, speech_service
from lookloop.server.edge import FORM_ALLOWANCE, upload_cap
from lookloop.server.policies import Access, idempotency_key
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.voice import SpeakIn, VoiceAskOut
from lookloop.speech import SpeechService, parse_language
from lookloop.store import idempotency
from lookloop.system import Lookloop

router = APIRouter(tags=["voice"])
System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
Caller = Annotated[Principal | None, Depends(current_principal)]
Speech = Annotated[SpeechService, Depends(speech_service)]
_ERRORS = error_responses(401, 403, 404, 413, 415, 422, 503)
_PAGES = Path(__file__).resolve().parents[1] / "pages"


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the {what} is over the limit of {limit} bytes")
    return data


def _streamed(audio: Iterator[bytes]) -> StreamingResponse:
    return StreamingResponse(audio, media_type="audio/wav", headers={"Cache-Control": "no-store"})


@router.post("/v1/asks/voice", response_model=VoiceAskOut, responses=_ERRORS, tags=["asks"],
             summary="Ask by voice: an audio clip (WAV, WebM, Ogg) and the camera frame; the answer is spoken")
@upload_cap(lambda s: s.max_audio_bytes + s.max_image_bytes + FORM_ALLOWANCE)
async def voice_ask(
    system: System,
    access: Policy,
    speech: Speech,
    caller: Caller,
    threads: Annotated[CapacityLimiter, Depends(ask_threads)],
    audio: Annotated[UploadFile, File(description="The spoken question: WAV, WebM/Opus, Ogg, MP3")],
    image: Annotated[UploadFile | None, File(description="The camera frame (JPEG, PNG, WebP)")] = None,
    language: Annotated[str | None, Form(description="en or zh; empty: detected")] = None,
    question: Annotated[str | None, Form(max_length=500, description="Typed text to use instead of ASR")] = None,
    speak: Annotated[bool, Form(description="Synthesise the answer (audio_url)")] = True,
    skill: Annotated[str | None, Form(max_length=32)] = None,
    device_id: Annotated[str | None, Form(max_length=64)] = None,
    retry_key: Annotated[idempotency.Key | None, Depends(idempotency_key)] = None,
) -> VoiceAskOut:
    lang = parse_language(language)
    who = access.ask_device(caller, device_id)
    clip = await _read(audio, system.settings.max_audio_bytes, "audio clip")
    frame = await _read(image, system.settings.max_image_bytes, "image") if image is not None else None
    record, heard = await to_thread.run_sync(
        partial(speech.voice_ask, system, clip, frame, question=question, language=lang, device_id=who,
                idempotency_key=retry_key, skill=skill),
        limiter=threads,
    )
    audio_url = f"/v1/speech/{speech.speak_answer(record.final_answer or record.answer.text)}" if speak else None
    return VoiceAskOut.of(record, heard, audio_url)


@router.get("/v1/speech/{token}", responses=_ERRORS, response_class=StreamingResponse,
            summary="A voice answer's audio (WAV, streamed as it is synthesised)")
async def get_speech(speech: Speech, token: str) -> StreamingResponse:
    return _streamed(await run_in_threadpool(speech.audio, token))


@router.get("/v1/tts", responses=_ERRORS, response_class=StreamingResponse,
            summary="Speak a text (WAV, streamed): e.g. a late human answer")
async def tts_get(
    access: Policy, speech: Speech, caller: Caller,
    text: Annotated[str, Query(min_length=1, max_length=2000)],
    language: Annotated[str, Query(pattern="^(en|zh)$")] = "en",
) -> StreamingResponse:
    access.speak(caller)
    return _streamed(await run_in_threadpool(speech.say, text, language))


@router.post("/v1/tts", responses=_ERRORS, response_class=StreamingResponse,
             summary="Speak a text (WAV, streamed)")
async def tts_post(access: Policy, speech: Speech, caller: Caller, body: SpeakIn) -> StreamingResponse:
    access.speak(caller)
    return _streamed(await run_in_threadpool(speech.say, body.text, body.language))


def mount_simulator_page(app: FastAPI) -> None:
    """The glasses simulator at /simulator (its scripts and style are served from /pages/)."""

    @app.get("/simulator", include_in_schema=False)
    def simulator_page() -> FileResponse:
        return FileResponse(_PAGES / "simulator.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
