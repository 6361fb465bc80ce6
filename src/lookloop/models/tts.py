"""Speech out with the Debian ``espeak-ng`` program: English, and Mandarin read from pinyin."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave
from functools import lru_cache

MAX_TTS_CHARS = 2000


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing, timed out or failed."""


def _espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SpeechSynthesisError("espeak-ng is not installed: run `apt-get install -y espeak-ng`")
    return path


@lru_cache(maxsize=8)
def _voices(language: str) -> frozenset[str]:
    out = subprocess.run(
        [_espeak(), f"--voices={language}"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            names.add(cols[1])  # the language column, e.g. cmn, cmn-latn-pinyin
            names.add(cols[4].rsplit("/", 1)[-1].lower())  # the voice file, e.g. cmn-latn-pinyin
    return frozenset(names)


def _has_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def chinese_to_pinyin(text: str, tones: bool = True) -> str:
    """Pinyin of Chinese text (tone numbers like ``ni3 hao3`` when ``tones``); other text passes through."""
    from pypinyin import Style, lazy_pinyin  # slow to import: loaded on first use

    style = Style.TONE3 if tones else Style.NORMAL
    return " ".join(lazy_pinyin(text, style=style, neutral_tone_with_five=tones, errors="default"))


def _voice_and_text(text: str, language: str) -> tuple[str, str]:
    lang = language.lower().split("-")[0]
    if lang == "en":
        return "en-us", text
    if lang == "zh":
        voices = _voices("zh")
        if "cmn-latn-pinyin" in voices:
            return "cmn-latn-pinyin", chinese_to_pinyin(text)
        if "cmn" in voices:
            return "cmn", text  # this voice reads latin as English, so give it the characters
        # No Mandarin voice: an English voice reading toneless pinyin is still understandable-ish.
        return "en-us", chinese_to_pinyin(text, tones=False)
    raise ValueError(f"no speech voice for language {language!r}; use en or zh")


def _rewrap(raw: bytes) -> bytes:
    # espeak-ng --stdout writes a streaming header with placeholder sizes; rebuild a correct one.
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise SpeechSynthesisError("espeak-ng did not produce WAV audio")
    pos, rate, channels, width, pcm = 12, 22050, 1, 2, b""
    while pos + 8 <= len(raw):
        cid, size = struct.unpack("<4sI", raw[pos : pos + 8])
        if cid == b"fmt ":
            _, channels, rate, _, _, bits = struct.unpack("<HHIIHH", raw[pos + 8 : pos + 24])
            width = bits // 8
        elif cid == b"data":
            pcm = raw[pos + 8 :]
            break
        pos += 8 + size + (size & 1)
    pcm = pcm[: len(pcm) - len(pcm) % (width * channels)]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def synthesize(text: str, language: str = "en", rate_wpm: int = 165, timeout_s: float = 20.0) -> bytes:
    """Speak ``text`` in ``language`` (en or zh); returns WAV bytes (16-bit mono, 22.05 kHz).

    ``ValueError`` for empty/too long text or an unknown language; ``SpeechSynthesisError`` when
    espeak-ng is missing or fails.
    """
    clean = " ".join(text.split())
    if not clean:
        raise ValueError("nothing to say: the text is empty")
    if len(clean) > MAX_TTS_CHARS:
        raise ValueError(f"text is {len(clean)} characters; the speech limit is {MAX_TTS_CHARS}")
    if language.lower().startswith("en") and _has_cjk(clean):
        language = "zh"
    voice, spoken = _voice_and_text(clean, language)
    try:
        proc = subprocess.run(
            [_espeak(), "-v", voice, "-s", str(rate_wpm), "--stdout", "--stdin"],
            input=spoken.encode("utf-8"),
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SpeechSynthesisError(f"espeak-ng took longer than {timeout_s:.0f} s") from exc
    if proc.returncode != 0 or not proc.stdout:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SpeechSynthesisError(f"espeak-ng failed: {msg[-1] if msg else f'exit code {proc.returncode}'}")
    return _rewrap(proc.stdout)
