"""Voice in and out: decoding, endpointing, transcription, synthesis, WER and the ``bench asr`` command."""

from __future__ import annotations

import io
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from lookloop.config import get_settings
from lookloop.errors import BadInput
from lookloop.models import speech
from lookloop.models.asr import (
    WHISPER_BASE_SHA256,
    ModelIntegrityError,
    PocketsphinxTranscriber,
    Transcriber,
    Transcript,
    WhisperTranscriber,
    edit_distance,
    ensure_whisper_base,
    get_transcriber,
    normalize_text,
    number_to_words,
    strip_prompt_echo,
    word_error_rate,
)
from lookloop.models.vad import SpeechEndpointer, speech_segments, trim_to_speech

SPEECH_DIR = get_settings().data_dir / "speech-en"
# Clearly read clips from three different speakers.
CLIPS = {
    "wav/005600060.wav": "HIS EYES WERE ROLLING AROUND",
    "wav/010270368.wav": "HER EYES MY DEAR BOY ARE SO BEAUTIFUL",
    "wav/024020291.wav": "THE MOST BEAUTIFUL WOMAN IN THE UNIVERSE",
}

needs_data = pytest.mark.skipif(
    not (SPEECH_DIR / "transcripts.tsv").is_file(), reason="speech-en data missing"
)
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def _float_wav(samples: np.ndarray, rate: int) -> bytes:
    # WAVE_FORMAT_IEEE_FLOAT, which the stdlib wave module cannot write.
    data = samples.astype("<f4").tobytes()
    fmt = (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
    fmt += (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    body = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    body += b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _clip(name: str) -> np.ndarray:
    return speech.decode_audio((SPEECH_DIR / name).read_bytes())


# ---------------------------------------------------------------- WER and normaliser


def test_edit_distance_counts_each_edit_once() -> None:
    assert edit_distance([], []) == 0
    assert edit_distance("a b c".split(), "a b c".split()) == 0
    assert edit_distance("a b c".split(), "a x c".split()) == 1
    assert edit_distance("a b c".split(), "a c".split()) == 1
    assert edit_distance("a b".split(), "a b c d".split()) == 2
    assert edit_distance("a b c".split(), []) == 3


def test_wer_is_corpus_level_and_normalised() -> None:
    assert word_error_rate(["It's ten o'clock."], ["it is 10 O'Clock"]) == 0.0
    # 1 error in a 4-word ref plus 0 in a 6-word ref: 1 / 10, not the mean of per-sentence rates.
    wer = word_error_rate(["one two three four", "a b c d e f"], ["one two three", "a b c d e f"])
    assert wer == pytest.approx(0.1)
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])
    with pytest.raises(ValueError):
        word_error_rate([""], [""])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("I CAN NOT GO", "I can't go."),
        ("I FALL IN LOVE MORE EVERYDAY", "I fall in love more every day!"),
        ("IN THE MEAN TIME", "In the meantime,"),
        ("HE'S THE 2ND", "he is the second"),
        ("MY FAVOURITE COLOUR IS GREY", "My favorite color is gray."),
        ("WE'LL SEE YOU'RE RIGHT", "we will see you are right"),
        ("SIXTY FIVE PERCENT", "65%"),
        ("WELL-KNOWN", "well known"),
        ("IN NINETEEN NINETY", "in 1990"),
        ("TWO THOUSAND AND ONE", "2001"),
    ],
)
def test_normaliser_makes_variants_equal(a: str, b: str) -> None:
    assert normalize_text(a) == normalize_text(b)


def test_normaliser_keeps_real_differences() -> None:
    assert normalize_text("his eyes") != normalize_text("her eyes")
    assert normalize_text("John's car") == ["johns", "car"]
    assert number_to_words(1234567) == "one million two hundred thirty four thousand five hundred sixty seven"


def test_prompt_echo_is_removed_but_real_words_stay() -> None:
    prompt = "Hello. Here is a short English sentence, read aloud."
    assert strip_prompt_echo("Here is a short English sentence, read aloud. Here is a short English.", prompt) == ""
    assert strip_prompt_echo("Here is a short answer to the test.", prompt) == "Here is a short answer to the test."
    assert strip_prompt_echo("Hello. Here is a short English sentence. You can go.", prompt) == "You can go."


# ---------------------------------------------------------------- audio decoding


def test_decoder_rejects_garbage_and_empty() -> None:
    for bad in (b"", b"\x00\x01garbage bytes that are no audio" * 10, b"RIFF\x00\x00\x00\x00WAVEjunk"):
        with pytest.raises(ValueError) as info:
            speech.decode_audio(bad)
        assert isinstance(info.value, BadInput) and 400 <= info.value.status_code < 500
        assert str(info.value)


def test_decoder_resamples_and_mixes_down() -> None:
    t = np.arange(44_100) / 44_100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    out = speech.decode_audio(_wav_bytes(stereo, 44_100, channels=2))
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - 16_000) <= 2
    assert 0.45 < float(np.abs(out).max()) < 0.55

    f = speech.decode_audio(_float_wav(np.full(48_000, 0.25, dtype=np.float32), 48_000))
    assert abs(len(f) - 16_000) <= 2 and abs(float(np.median(f)) - 0.25) < 1e-3


def test_decoder_enforces_duration_limit() -> None:
    long = np.zeros(16_000 * 3, dtype="<i2")
    with pytest.raises(ValueError, match="limit"):
        speech.decode_audio(_wav_bytes(long, 16_000), max_seconds=2)
    assert len(speech.decode_audio(_wav_bytes(long, 16_000), max_seconds=5)) == 48_000


def test_decoder_reads_compressed_audio() -> None:
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    rate = 48_000
    t = np.arange(rate) / rate
    # WebM/Opus is what browsers' MediaRecorder uploads.
    with av.open(buf, mode="w", format="webm") as container:
        stream = container.add_stream("libopus", rate=rate)
        stream.layout = "mono"
        samples = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
        for i in range(0, rate, 960):
            frame = av.AudioFrame.from_ndarray(samples[None, i : i + 960], format="flt", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = speech.decode_audio(buf.getvalue())
    assert abs(len(out) - 16_000) < 1600
    assert float(np.abs(out).max()) > 0.1
    with pytest.raises(ValueError):  # a header with no audio after it
        speech.decode_audio(buf.getvalue()[:40])


# ---------------------------------------------------------------- voice activity


@needs_data
def test_vad_finds_start_and_end_in_padded_clip() -> None:
    clip = _clip("wav/005600060.wav")
    padded = np.concatenate([np.zeros(32_000, np.float32), clip, np.zeros(24_000, np.float32)])
    own = speech_segments(clip)
    segs = speech_segments(padded)
    assert segs, "no speech found"
    assert 2.0 <= segs[0][0] <= 2.0 + own[0][0] + 0.1
    assert segs[-1][1] <= 2.0 + len(clip) / 16_000 + 0.1
    assert segs[-1][1] - segs[0][0] > 1.0

    # Streaming: int16 bytes in 100 ms chunks; "end" comes after ~500 ms of silence.
    ep = SpeechEndpointer(end_silence_ms=500)
    pcm = (padded * 32767).astype("<i2").tobytes()
    events = [e for i in range(0, len(pcm), 3200) for e in ep.feed(pcm[i : i + 3200])] + ep.flush()
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert events[0].time_s >= 1.9
    assert events[-1].audio is not None and len(events[-1].audio) > 16_000

    trimmed = trim_to_speech(padded)
    assert 16_000 < len(trimmed) < len(padded) - 32_000
    assert trim_to_speech(np.zeros(32_000, np.float32)).size == 0


# ---------------------------------------------------------------- transcribers


def test_corrupted_whisper_cache_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "whisper-base"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not the model")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        ensure_whisper_base(tmp_path)
    with pytest.raises(ModelIntegrityError):
        WhisperTranscriber(cache_dir=tmp_path).transcribe(np.zeros(16_000, np.float32), language="en")
    assert len(WHISPER_BASE_SHA256) == 64


@needs_data
@pytest.mark.parametrize("make", [lambda: get_transcriber("whisper"), PocketsphinxTranscriber])
def test_transcriber_conformance(make: type[Transcriber]) -> None:
    t = make()
    assert isinstance(t, Transcriber)
    audio = _clip("wav/005600060.wav")
    out = t.transcribe(audio, language="en")
    assert isinstance(out, Transcript)
    assert out.language == "en" and out.duration_s == pytest.approx(len(audio) / 16_000)
    assert out.text.strip()
    assert isinstance(t.transcribe(np.zeros(8_000, np.float32), language="en").text, str)
    with pytest.raises(ValueError):
        t.transcribe(np.zeros((2, 100), np.float32), language="en")
    with pytest.raises(ValueError):
        t.transcribe(audio, language="xx")


@needs_data
def test_whisper_transcribes_real_clips() -> None:
    t = get_transcriber("whisper")
    refs, hyps = [], []
    for name, ref in CLIPS.items():
        refs.append(ref)
        hyps.append(t.transcribe(_clip(name), language="en").text)
    assert word_error_rate(refs, hyps) <= 0.2, hyps
    assert get_transcriber("whisper") is t  # cached in process


@needs_data
def test_transcribe_bytes_detects_english_among_en_zh() -> None:
    out = speech.transcribe_bytes((SPEECH_DIR / "wav/024020291.wav").read_bytes())
    assert out.language in ("en", "zh")
    assert out.duration_s > 1.0


# ---------------------------------------------------------------- speech out


@needs_espeak
@pytest.mark.parametrize(
    ("text", "lang"), [("The apples cost twelve crowns.", "en"), ("这是一个苹果。", "zh")]
)
def test_synthesize_gives_valid_wav(text: str, lang: str) -> None:
    data = speech.synthesize(text, lang)
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        seconds = w.getnframes() / w.getframerate()
    assert 0.5 < seconds < 10
    audio = speech.decode_audio(data)
    assert float(np.abs(audio).max()) > 0.05


@needs_espeak
def test_synthesize_rejects_bad_requests() -> None:
    with pytest.raises(ValueError):
        speech.synthesize("   ", "en")
    with pytest.raises(ValueError):
        speech.synthesize("bonjour", "fr")


@needs_espeak
def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lookloop.models.tts.shutil.which", lambda _name: None)
    with pytest.raises(speech.SpeechSynthesisError, match="apt-get install"):
        speech.synthesize("hello", "en")


# ---------------------------------------------------------------- bench command


def _bench_app() -> typer.Typer:
    from lookloop.bench import asr as bench_asr

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """bench"""

    bench_asr.register(app)
    return app


def _three_clips(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "wav").mkdir(parents=True)
    lines = ["file\ttext\tspeaker"]
    for name, ref in CLIPS.items():
        (data / "wav" / Path(name).name).symlink_to(SPEECH_DIR / name)
        lines.append(f"{Path(name).name}\t{ref}\tx")  # bare names: resolved under DIR/wav/
    (data / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return data


@needs_data
def test_bench_asr_on_three_clips(tmp_path: Path) -> None:
    data = _three_clips(tmp_path)
    out = tmp_path / "asr.json"
    result = CliRunner().invoke(_bench_app(), ["asr", "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert {"wer", "rtf", "n"} <= set(figures)
    assert figures["n"] == 3 and 0.0 <= figures["wer"] <= 0.5 and figures["rtf"] > 0
    assert all(not isinstance(v, (dict, list)) for v in figures.values())


def test_bench_asr_bad_folder_is_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(_bench_app(), ["asr", "--data", str(tmp_path)])
    assert result.exit_code == 2
    assert "transcripts.tsv" in result.output


@needs_data
def test_bench_asr_decoding_knobs(tmp_path: Path) -> None:
    """Greedy, prompt-free decoding is measurable from the command line; a bad knob is a one-line error."""
    data = _three_clips(tmp_path)
    out = tmp_path / "greedy.json"
    args = ["asr", "--data", str(data), "--json", str(out), "--beam-size", "1", "--no-prompt", "--no-fallback",
            "--limit", "2"]
    result = CliRunner().invoke(_bench_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["n"] == 2
    bad = CliRunner().invoke(_bench_app(), ["asr", "--data", str(data), "--compute-type", "fp8"])
    assert bad.exit_code == 2 and "compute type" in bad.output


def test_whisper_options_follow_the_bench_knobs() -> None:
    from lookloop.bench.asr import make_transcriber
    from lookloop.models.asr import WhisperTranscriber

    t = make_transcriber("whisper", beam_size=1, prompt=False, fallback=False, compute_type="float32")
    assert isinstance(t, WhisperTranscriber)
    assert (t.options.beam_size, t.options.prompts, t.options.temperature, t.options.compute_type) == (
        1, {}, (0.0,), "float32")
    served = make_transcriber("whisper")
    assert isinstance(served, WhisperTranscriber) and served.options.beam_size == 5 and served.options.prompts


# --- the voice path (lookloop.speech): language, asks and speech jobs without the HTTP layer ---------------


def test_voice_language_is_parsed_or_refused() -> None:
    from lookloop.speech import parse_language

    assert [parse_language(x) for x in (None, "", " auto ", " EN ", "zh")] == [None, None, None, "en", "zh"]
    with pytest.raises(BadInput, match="language must be one of en, zh"):
        parse_language("fr")


def test_voice_ask_takes_typed_questions_and_answers_resent_asks_unheard(tmp_path: Path) -> None:
    from dataclasses import dataclass

    from lookloop.speech import SpeechService
    from lookloop.store.idempotency import Key, Request

    @dataclass
    class Record:
        question: str

    class Asks:
        def __init__(self) -> None:
            self.asked: list[tuple[str, str, str | None]] = []

        def replayed(self, request: Request) -> Record | None:
            return Record("earlier question") if request.key and request.key.value == "seen" else None

        def ask(self, question: str, image: bytes | None, *, device_id: str = "anonymous",
                idempotency_key: Key | None = None, skill: str | None = None,
                request: Request | None = None) -> Record:
            self.asked.append((question, device_id, skill))
            return Record(question)

    service = SpeechService(get_settings().model_copy(update={"model_cache_dir": tmp_path}))
    asks = Asks()
    kw = {"language": None, "device_id": "dev-1", "skill": "identify"}
    record, heard = service.voice_ask(asks, b"", None, question="  what is this ", idempotency_key=None, **kw)
    assert record.question == heard.text == "what is this" and heard.language == "en"
    assert set(heard.timings_ms) == {"answer", "total"} and asks.asked == [("what is this", "dev-1", "identify")]
    record, heard = service.voice_ask(asks, b"", None, question=None, idempotency_key=Key("device:dev-1", "seen"),
                                      **kw)
    assert record.question == "earlier question" and len(asks.asked) == 1  # not heard, not asked again


def test_speech_jobs_stream_sentence_by_sentence_and_fail_clearly() -> None:
    from lookloop.errors import NotConfigured, NotFound
    from lookloop.speech import SpeechJobs

    said: list[str] = []

    def fake_tts(text: str, language: str) -> bytes:
        said.append(text)
        return speech.encode_wav(np.zeros(160, np.float32))

    jobs = SpeechJobs(fake_tts)
    chunks = list(jobs.get(jobs.start("Banana. 12.50 SEK!", "en")).audio())
    assert said == ["Banana.", "12.50 SEK!"] and len(chunks) == 2
    assert chunks[0][:4] == b"RIFF" and len(chunks[0]) == 44 + 320 and len(chunks[1]) == 320

    def broken_tts(text: str, language: str) -> bytes:
        raise speech.SpeechSynthesisError("espeak-ng is not installed")

    failing = SpeechJobs(broken_tts)
    with pytest.raises(NotConfigured, match="speech is unavailable: espeak-ng is not installed"):
        failing.get(failing.start("Hello.", "en")).audio()
    with pytest.raises(NotFound):
        jobs.get("no-such-token")
