"""Voice in and out for the wearer's asks: hearing (decode → VAD → ASR) and spoken answers (TTS jobs).

The models themselves live in ``lookloop.models`` (``asr``, ``vad``, ``tts``, ``speech``); this package
puts them together for the voice path and keeps the answers being spoken.
"""

from lookloop.speech.hearing import LANGUAGES, Heard, Hearing, parse_language, voice_transcriber
from lookloop.speech.service import Asks, SpeechService
from lookloop.speech.speaking import (
    SPEECH_MAX_JOBS,
    SPEECH_TTL_S,
    SpeechJob,
    SpeechJobs,
    speech_language,
    split_sentences,
    wav_header,
)

__all__ = [
    "LANGUAGES",
    "SPEECH_MAX_JOBS",
    "SPEECH_TTL_S",
    "Asks",
    "Heard",
    "Hearing",
    "SpeechJob",
    "SpeechJobs",
    "SpeechService",
    "parse_language",
    "speech_language",
    "split_sentences",
    "voice_transcriber",
    "wav_header",
]
