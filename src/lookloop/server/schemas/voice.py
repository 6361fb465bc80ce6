"""Voice asks and speech out."""

from __future__ import annotations

from pydantic import BaseModel, Field

from lookloop.domain import AskRecord
from lookloop.server.schemas.asks import AskOut
from lookloop.speech import Heard


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

    @classmethod
    def of(cls, record: AskRecord, heard: Heard, audio_url: str | None) -> VoiceAskOut:
        return cls(
            ask=AskOut.of(record),
            transcript=TranscriptOut(text=heard.text, language=heard.language, duration_s=heard.duration_s,
                                     speech_s=heard.speech_s),
            audio_url=audio_url,
            timings_ms={k: round(v, 1) for k, v in heard.timings_ms.items()},
        )


class SpeakIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    language: str = Field(default="en", pattern="^(en|zh)$")
