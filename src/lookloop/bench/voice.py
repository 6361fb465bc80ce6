"""``lookloop bench voice``: voice ask latency, end of speech → first byte of the spoken answer.

Each clip is a finished push-to-talk recording (the wearer let go of the button when they stopped
speaking): the clock starts when its upload starts and stops when the first byte of the answer's
audio arrives, through a real server on loopback (``POST /v1/asks/voice`` then ``GET audio_url``).
Clips: wearer-style questions spoken by espeak-ng, plus real speech from ``speech-en``; each is paired
with a Grocery ``val`` photo.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from lookloop.bench._common import console, demo_system, fail, make_progress, percentile, print_figures, write_json
from lookloop.bench.asr import load_manifest
from lookloop.bench.latency import _Server
from lookloop.catalog import GroceryDataset
from lookloop.config import get_settings
from lookloop.errors import LookloopError
from lookloop.models.speech import decode_audio, encode_wav
from lookloop.server.app import create_app

QUESTIONS = (
    "what is this", "how much does this cost", "what colour is this", "read this for me", "what am I looking at",
    "is this oat milk", "what is the price of this", "describe what you see", "remember this is where I parked",
    "what brand is this",
)
VOICES = (("en-us", 150), ("en-gb", 175))


def espeak_clip(text: str, voice: str, rate: int) -> bytes:
    """``text`` spoken by espeak-ng as 16 kHz WAV with 0.3 s of silence either side."""


    raw = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                         capture_output=True, check=True, timeout=30).stdout
    pad = np.zeros(4800, np.float32)
    return encode_wav(np.concatenate([pad, decode_audio(raw), pad]))


def load_clips(speech_dir: Path | None, speech_limit: int, spoken: bool) -> list[tuple[str, bytes]]:
    clips: list[tuple[str, bytes]] = []
    if spoken:
        clips += [(f"espeak:{v}:{q}", espeak_clip(q, v, r)) for v, r in VOICES for q in QUESTIONS]
    if speech_dir is not None and speech_limit > 0:

        items = load_manifest(speech_dir)
        step = max(1, len(items) // speech_limit)  # spread over speakers rather than the first few
        clips += [(f"speech-en:{i.path.name}", i.path.read_bytes()) for i in items[::step][:speech_limit]]
    return clips


def run_voice(clips: list[tuple[str, bytes]], images: list[Path], language: str, progress: Any) -> dict[str, Any]:
    totals: list[float] = []
    asr: list[float] = []
    answer: list[float] = []
    vad: list[float] = []
    cpu: list[float] = []
    by_source: dict[str, list[float]] = {"espeak": [], "speech-en": []}
    after_post: list[float] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lookloop-bench-voice-") as tmp:
        system = demo_system(Path(tmp))
        settings = system.settings
        with _Server(create_app(settings, system=system, warm=True)) as url, \
                httpx.Client(base_url=url, timeout=120) as client:
            form = {"language": language} if language != "auto" else {}

            def one(audio: bytes, image: bytes) -> tuple[float, float, dict[str, float]]:
                t0 = time.perf_counter()
                r = client.post("/v1/asks/voice", data=form, files={"audio": ("q.wav", audio, "audio/wav"),
                                                                     "image": ("f.jpg", image, "image/jpeg")})
                t_post = time.perf_counter()
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
                body = r.json()
                with client.stream("GET", body["audio_url"]) as s:
                    if s.status_code != 200:
                        raise RuntimeError(f"speech {s.status_code}")
                    chunks = s.iter_raw()
                    for chunk in chunks:
                        if chunk:
                            break
                    t1 = time.perf_counter()
                    for _ in chunks:  # drain, as a player would
                        pass
                return (t1 - t0) * 1000, (t1 - t_post) * 1000, body["timings_ms"]

            warm = images[0].read_bytes()
            for _, audio in clips[:2]:  # loads Whisper, the VAD and espeak before the clock runs
                one(audio, warm)
            task = progress.add_task("voice asks", total=len(clips))
            for i, (name, audio) in enumerate(clips):
                c0 = time.process_time()
                try:
                    total, tail, timings = one(audio, images[i % len(images)].read_bytes())
                except (RuntimeError, httpx.HTTPError) as exc:
                    errors.append(f"{name}: {exc}")
                else:
                    totals.append(total)
                    cpu.append((time.process_time() - c0) * 1000)
                    by_source.setdefault(name.split(":", 1)[0], []).append(total)
                    after_post.append(tail)
                    asr.append(timings.get("asr", 0.0))
                    answer.append(timings.get("answer", 0.0))
                    vad.append(timings.get("decode", 0.0) + timings.get("vad", 0.0))
                progress.advance(task)
        system.db.dispose()
    for line in errors[:5]:
        console.print(f"[yellow]failed[/yellow] {line}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "voice_p50_ms": percentile(totals, 50),
        "voice_p95_ms": percentile(totals, 95),
        "n": len(totals),
        "spoken_questions_p50_ms": percentile(by_source["espeak"], 50),
        "spoken_questions_p95_ms": percentile(by_source["espeak"], 95),
        "speech_en_p50_ms": percentile(by_source["speech-en"], 50),
        "speech_en_p95_ms": percentile(by_source["speech-en"], 95),
        "asr_p50_ms": percentile(asr, 50),
        "asr_p95_ms": percentile(asr, 95),
        "answer_p50_ms": percentile(answer, 50),
        "decode_vad_p50_ms": percentile(vad, 50),
        "speech_first_byte_p50_ms": percentile(after_post, 50),
        # CPU time of this process (all threads) per ask: what the ask costs when other work shares the cores.
        "cpu_p50_ms": percentile(cpu, 50),
        "cpu_p95_ms": percentile(cpu, 95),
        "errors": len(errors),
        "cpu_count": os.cpu_count() or 0,
        "load_avg_1m": round(load, 2),
    }


def register(app: typer.Typer) -> None:
    @app.command("voice")
    def voice(
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here as JSON.")] = None,
        data: Annotated[
            Path | None, typer.Option(help="A speech folder with transcripts.tsv; default speech-en.")
        ] = None,
        speech_limit: Annotated[int, typer.Option(help="Real-speech clips to use (0: none).")] = 20,
        spoken: Annotated[bool, typer.Option(help="Include espeak-ng spoken wearer questions.")] = True,
        language: Annotated[str, typer.Option(help="Language the glasses send: en, zh or auto (detect).")] = "en",
    ) -> None:
        """Voice ask latency: end of speech → first byte of the spoken answer (p50/p95), through HTTP."""

        if language not in ("en", "zh", "auto"):
            raise fail("--language must be en, zh or auto")
        settings = get_settings()
        speech_dir = data if data is not None else settings.data_dir / "speech-en"
        if data is not None and not (data / "transcripts.tsv").is_file():
            raise fail(f"{data} has no transcripts.tsv")
        if not (speech_dir / "transcripts.tsv").is_file():
            speech_dir = None  # type: ignore[assignment]
        try:
            images = [i.path for i in GroceryDataset(settings.grocery_dir).split("val.txt")]
            clips = load_clips(speech_dir, speech_limit, spoken)
        except (LookloopError, ValueError) as exc:
            raise fail(getattr(exc, "message", str(exc))) from None
        except (FileNotFoundError, subprocess.CalledProcessError) as exc:
            raise fail(f"could not make the spoken questions (is espeak-ng installed?): {exc}") from None
        if not clips:
            raise fail("no clips: keep --spoken or give --data with --speech-limit > 0")
        images = images[:: max(1, len(images) // 40)]
        with make_progress() as progress:
            figures = run_voice(clips, images, language, progress)
        print_figures("voice ask latency (ms): end of speech → first audio byte, through HTTP", figures)
        console.print(f"target: voice p95 ≤ 1200 ms on 2 cores ({figures['voice_p95_ms']:.0f} ms, "
                      f"{figures['cpu_count']} cores, load {figures['load_avg_1m']})")
        write_json(json_path, figures)
