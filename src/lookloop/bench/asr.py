"""``lookloop bench asr``: word error rate and real-time factor of a transcriber on a folder of WAVs."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lookloop.models.asr import (
    SAMPLE_RATE,
    PocketsphinxTranscriber,
    Transcriber,
    WhisperOptions,
    WhisperTranscriber,
    edit_distance,
    normalize_text,
    word_error_rate,
)
from lookloop.models.speech import decode_audio


@dataclass(frozen=True)
class Item:
    path: Path
    text: str
    speaker: str


def load_manifest(data_dir: Path, limit: int | None = None) -> list[Item]:
    """Rows of ``DATA_DIR/transcripts.tsv`` (header ``file  text  [speaker]``) with resolved WAV paths."""
    tsv = data_dir / "transcripts.tsv"
    if not tsv.is_file():
        raise ValueError(f"{tsv} not found: the data folder needs a transcripts.tsv (file, text, speaker)")
    items: list[Item] = []
    with tsv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None or not {"file", "text"} <= set(reader.fieldnames):
            raise ValueError(f"{tsv} must have a header with columns 'file' and 'text'")
        for line, row in enumerate(reader, start=2):
            name = (row.get("file") or "").strip()
            if not name:
                raise ValueError(f"{tsv}:{line}: empty file column")
            candidates = [data_dir / name, data_dir / "wav" / name, data_dir / "wav" / Path(name).name]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise ValueError(f"{tsv}:{line}: audio file {name!r} not found under {data_dir}")
            items.append(Item(path, (row.get("text") or "").strip(), (row.get("speaker") or "").strip()))
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise ValueError(f"{tsv} lists no audio files")
    return items


def make_transcriber(
    model: str, *, beam_size: int | None = None, prompt: bool = True, fallback: bool = True,
    compute_type: str | None = None,
) -> Transcriber:
    """The transcriber to measure; the Whisper knobs default to what the product serves."""

    if model == "whisper":
        options = WhisperOptions()
        if beam_size is not None:
            options.beam_size = beam_size
        if not prompt:
            options.prompts = {}
        if not fallback:
            options.temperature = (0.0,)
        if compute_type is not None:
            if compute_type not in ("int8", "float32"):
                raise ValueError(f"unknown compute type {compute_type!r}; use int8 or float32")
            options.compute_type = compute_type
        return WhisperTranscriber(options)
    if model == "pocketsphinx":
        return PocketsphinxTranscriber()
    raise ValueError(f"unknown model {model!r}; use whisper or pocketsphinx")


def run_bench(
    items: list[Item], transcriber: Transcriber, language: str | None = "en", console: Console | None = None
) -> tuple[dict[str, Any], list[tuple[int, str, str, str]]]:
    """Transcribe every item; returns flat figures (``wer``, ``rtf``, ``n`` …) and the clips, worst first."""

    refs: list[str] = []
    hyps: list[str] = []
    audio_s = 0.0
    busy_s = 0.0
    cpu_s = 0.0
    worst: list[tuple[int, str, str, str]] = []
    # Load the model before timing: RTF is about steady-state transcription, not start-up.
    t0 = time.perf_counter()
    transcriber.transcribe(decode_audio(items[0].path.read_bytes()), language=language)
    load_s = time.perf_counter() - t0
    with Progress(
        TextColumn("[bold]asr"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as progress:
        task = progress.add_task("transcribe", total=len(items))
        for item in items:
            audio = decode_audio(item.path.read_bytes(), max_seconds=600)
            start, cpu_start = time.perf_counter(), time.process_time()
            result = transcriber.transcribe(audio, language=language)
            busy_s += time.perf_counter() - start
            cpu_s += time.process_time() - cpu_start
            audio_s += len(audio) / SAMPLE_RATE
            refs.append(item.text)
            hyps.append(result.text)
            errs = edit_distance(normalize_text(item.text), normalize_text(result.text))
            worst.append((errs, item.path.name, item.text, result.text))
            progress.advance(task)
    worst.sort(key=lambda w: -w[0])
    figures = {
        "wer": round(word_error_rate(refs, hyps), 4),
        "rtf": round(busy_s / audio_s, 4) if audio_s else 0.0,
        "n": len(items),
        "model": transcriber.name,
        "audio_s": round(audio_s, 1),
        "processing_s": round(busy_s, 1),
        # CPU seconds per audio second: unlike wall-clock RTF, it does not grow when other jobs share the cores.
        "cpu_rtf": round(cpu_s / audio_s, 4) if audio_s else 0.0,
        "first_call_s": round(load_s, 2),
        "ref_words": sum(len(normalize_text(r)) for r in refs),
        "exact_sentences": sum(1 for w in worst if w[0] == 0),
    }
    return figures, worst


def register(app: typer.Typer) -> None:
    @app.command("asr")
    def asr_cmd(
        data: Annotated[Path, typer.Option("--data", help="Folder with transcripts.tsv and wav/.")],
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write the figures as one JSON object.")
        ] = None,
        model: Annotated[str, typer.Option("--model", help="whisper or pocketsphinx")] = "whisper",
        limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N clips.")] = None,
        language: Annotated[
            str, typer.Option("--language", help="Language to decode in; 'auto' detects it per clip.")
        ] = "en",
        beam_size: Annotated[
            int | None, typer.Option("--beam-size", min=1, max=20, help="Whisper beam width (1: greedy; served: 5).")
        ] = None,
        prompt: Annotated[
            bool, typer.Option("--prompt/--no-prompt", help="Whisper's generic per-language prompt (served: on).")
        ] = True,
        fallback: Annotated[
            bool, typer.Option("--fallback/--no-fallback", help="Temperature fallback on failed decodes (served: on).")
        ] = True,
        compute_type: Annotated[
            str | None, typer.Option("--compute-type", help="int8 (served) or float32.")
        ] = None,
    ) -> None:
        """Word error rate and real-time factor of speech-to-text on DATA (e.g. speech-en)."""
        console = Console()
        try:
            items = load_manifest(data, limit)
            transcriber = make_transcriber(model, beam_size=beam_size, prompt=prompt, fallback=fallback,
                                           compute_type=compute_type)
            figures, worst = run_bench(items, transcriber, None if language == "auto" else language, console)
        except (ValueError, RuntimeError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        table = Table(title=f"ASR on {data} ({figures['model']})")
        for col in ("clips", "audio (s)", "WER", "RTF", "CPU s / audio s", "exact sentences"):
            table.add_column(col, justify="right")
        table.add_row(
            str(figures["n"]), f"{figures['audio_s']:.1f}", f"{figures['wer']:.3f}", f"{figures['rtf']:.3f}",
            f"{figures['cpu_rtf']:.3f}",
            f"{figures['exact_sentences']}/{figures['n']}",
        )
        console.print(table)
        for errs, name, ref, hyp in worst[:3]:
            if errs:
                console.print(f"[dim]{name}: {errs} errors  ref={ref!r}  hyp={hyp!r}[/dim]")
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
