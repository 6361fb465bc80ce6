"""The voice service: a spoken question in, the same ask as a typed one, the answer spoken back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol, TypeVar

from lookloop.config import Settings
from lookloop.errors import BadInput
from lookloop.speech.hearing import Heard, Hearing
from lookloop.speech.speaking import SpeechJobs, speech_language
from lookloop.store import idempotency


class _Record(Protocol):
    @property
    def question(self) -> str: ...


R = TypeVar("R", bound=_Record)
R_co = TypeVar("R_co", bound=_Record, covariant=True)


class Asks(Protocol[R_co]):
    """Where a heard question is asked: the same ask as ``POST /v1/asks`` (routing, skills, escalation)."""

    def replayed(self, request: idempotency.Request) -> R_co | None: ...

    def ask(
        self, question: str, image: bytes | None, *, device_id: str = ...,
        idempotency_key: idempotency.Key | None = ..., skill: str | None = ...,
        request: idempotency.Request | None = ...,
    ) -> R_co: ...


class SpeechService:
    """Hears spoken questions and speaks answers; one per app, so speech tokens outlive the request."""

    def __init__(self, settings: Settings) -> None:
        self.hearing = Hearing(settings.model_cache_dir, settings.max_audio_seconds)
        self.jobs = SpeechJobs()

    def warm(self) -> None:
        """Load the speech models before the first voice ask."""
        self.hearing.warm()

    def voice_ask(
        self, asks: Asks[R], audio: bytes, image: bytes | None, *, question: str | None, language: str | None,
        device_id: str, idempotency_key: idempotency.Key | None, skill: str | None,
    ) -> tuple[R, Heard]:
        """Hear ``audio`` (or take the typed ``question``) and ask it; a resent ask is answered again unheard.

        The keyed request is the clip (or the typed question), the frame, the language and the skill: a resent
        clip is not heard again, and another clip under the same key is refused.
        """
        start = time.perf_counter()
        request = idempotency.Request("voice", idempotency_key, idempotency.fingerprint(
            audio=None if question else idempotency.content_sha(audio), question=question or "",
            image=idempotency.content_sha(image), language=language or "", skill=skill or "", device=device_id,
        ))
        existing = asks.replayed(request)
        if existing is not None:
            return existing, Heard(existing.question, language or "en")
        if question:
            heard = Heard(question.strip(), language or "en")
        else:
            heard = self.hearing.hear(audio, language)
            if not heard.text:
                raise BadInput("the speech could not be made out; please ask again")
        t = time.perf_counter()
        record = asks.ask(heard.text, image, device_id=device_id, skill=skill, request=request)
        heard.timings_ms["answer"] = (time.perf_counter() - t) * 1000
        heard.timings_ms["total"] = (time.perf_counter() - start) * 1000
        return record, heard

    def speak_answer(self, text: str) -> str:
        """Start speaking an answer in its own language; returns the token that fetches the audio."""
        return self.jobs.start(text, speech_language(text))

    def audio(self, token: str) -> Iterator[bytes]:
        """The WAV stream of a started answer (waits for its first chunk)."""
        return self.jobs.get(token).audio()

    def say(self, text: str, language: str) -> Iterator[bytes]:
        """Speak ``text`` now: the WAV stream, once its first sentence is synthesised."""
        if not " ".join(text.split()):
            raise BadInput("nothing to say: the text is empty")
        return self.jobs.get(self.jobs.start(text, language)).audio()
