"""``lookloop bench intents``: in-scope accuracy and out-of-scope recall/precision of the intent router.

Both files use the CLINC150 JSON layout (``train``/``val``/``test`` and ``oos_*`` keys, lists of [text, intent]).
Training uses ``train`` + ``oos_train``; evaluation uses the eval file's ``test`` + ``oos_test`` when it has a
``test`` split, else ``val`` + ``oos_val``. The OOS threshold is picked on a held-out part of ``train`` only.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lookloop.config import get_settings
from lookloop.models.text import HashingTextEmbedder, MiniLMEmbedder, TextEmbedder
from lookloop.skills.router import OOS, IntentRouter


class DatasetError(ValueError):
    """A file that is not in the CLINC150 layout."""


Pairs = list[tuple[str, str]]


def _pairs(data: dict[str, Any], key: str, path: Path) -> Pairs:
    rows = data.get(key, [])
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: '{key}' is not a list")
    out: Pairs = []
    for row in rows:
        if not (isinstance(row, list | tuple) and len(row) == 2 and isinstance(row[0], str)):
            raise DatasetError(f"{path}: '{key}' rows must be [text, intent] pairs")
        out.append((row[0], str(row[1])))
    return out


def load_clinc(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'train'/'val'/'test' keys")
    return data


def split_sets(train_path: Path, eval_path: Path) -> tuple[Pairs, Pairs, str]:
    """(training pairs, evaluation pairs, name of the eval split). OOS pairs carry the label ``oos``."""
    tr = load_clinc(train_path)
    ev = tr if Path(eval_path).resolve() == Path(train_path).resolve() else load_clinc(eval_path)
    train = _pairs(tr, "train", train_path) + [(t, OOS) for t, _ in _pairs(tr, "oos_train", train_path)]
    if not _pairs(tr, "train", train_path):
        raise DatasetError(f"{train_path}: no 'train' examples")
    split = "test" if ev.get("test") else "val"
    evaluation = _pairs(ev, split, eval_path) + [(t, OOS) for t, _ in _pairs(ev, f"oos_{split}", eval_path)]
    if not evaluation:
        raise DatasetError(f"{eval_path}: no 'test' or 'val' examples")
    return train, evaluation, split


class _CachedEmbedder:
    """Remembers rows on disk so reruns of the bench embed each text once."""

    def __init__(self, inner: TextEmbedder, cache_dir: Path | None, progress: Progress | None = None) -> None:
        self.inner = inner
        self.cache_dir = cache_dir
        self.progress = progress

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def version(self) -> str:
        return self.inner.version

    def embed(self, texts: list[str]) -> np.ndarray:
        path = None
        if self.cache_dir is not None and len(texts) > 100:
            digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
            path = self.cache_dir / f"text-emb-{self.inner.version}-{digest}.npy"
            if path.exists():
                try:
                    cached = np.load(path, allow_pickle=False)
                    if cached.shape == (len(texts), self.dim):
                        return np.asarray(cached, dtype=np.float32)
                except (OSError, ValueError):
                    pass
        if self.progress is None or len(texts) <= 256:
            out = self.inner.embed(texts)
        else:
            task = self.progress.add_task(f"embedding {len(texts)} texts", total=len(texts))
            parts = []
            for i in range(0, len(texts), 256):
                parts.append(self.inner.embed(texts[i : i + 256]))
                self.progress.advance(task, len(parts[-1]))
            out = np.vstack(parts)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, out)
            except OSError:
                pass  # a read-only cache only costs time
        return out


def score(pred: list[str | None], truth: list[str]) -> dict[str, float]:
    """in-scope accuracy, OOS recall and OOS precision (OOS = predicted None)."""
    t = np.array(truth, dtype=object)
    p = np.array([OOS if x is None else x for x in pred], dtype=object)
    ins = t != OOS
    flagged = p == OOS
    return {
        "in_scope_accuracy": float((p[ins] == t[ins]).mean()) if ins.any() else float("nan"),
        "oos_recall": float(flagged[~ins].mean()) if (~ins).any() else float("nan"),
        "oos_precision": float((flagged & ~ins).sum() / flagged.sum()) if flagged.any() else 0.0,
    }


def run_bench(
    train_path: Path,
    eval_path: Path,
    embedder: TextEmbedder,
    *,
    c: float = 1.0,
    embedding_weight: float = 2.0,
    max_accuracy_drop: float = 0.005,
    cache_dir: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    train, evaluation, split = split_sets(train_path, eval_path)
    with Progress(console=console, transient=True) as progress:
        emb = _CachedEmbedder(embedder, cache_dir, progress)
        router = IntentRouter(emb, c=c, embedding_weight=embedding_weight, max_accuracy_drop=max_accuracy_drop)
        t0 = time.perf_counter()
        router.fit([t for t, _ in train], [i for _, i in train])
        fit_s = time.perf_counter() - t0
        texts = [t for t, _ in evaluation]
        decisions = router.predict(texts)
    figures: dict[str, Any] = score([d.intent for d in decisions], [i for _, i in evaluation])
    extra_oos = _pairs(load_clinc(eval_path), "oos_test", eval_path) if split == "val" else []
    if extra_oos:
        # CLINC150 ships oos_test without test: 1000 more unseen OOS asks make the recall less noisy
        flagged = [d.out_of_scope for d in router.predict([t for t, _ in extra_oos])]
        figures["oos_test_recall"] = float(np.mean(flagged))
        figures["n_oos_test"] = len(extra_oos)
    # per-question latency as the ask path sees it: one question, fresh embedding
    sample = texts[:: max(1, len(texts) // 100)][:100]
    t0 = time.perf_counter()
    for text in sample:
        router.route(text)
    latency_ms = (time.perf_counter() - t0) / max(1, len(sample)) * 1000
    figures.update(
        {
            "eval_split": split,
            "n_train": len(train),
            "n_eval_in_scope": sum(1 for _, i in evaluation if i != OOS),
            "n_eval_oos": sum(1 for _, i in evaluation if i == OOS),
            "n_intents": len(router.intents),
            "embedder": embedder.version,
            "threshold": router.threshold if np.isfinite(router.threshold) else None,
            "fit_s": round(fit_s, 2),
            "latency_ms_per_query": round(latency_ms, 2),
            "c": c,
            "embedding_weight": embedding_weight,
            "max_accuracy_drop": max_accuracy_drop,
        }
    )
    return figures


def make_embedder(name: str, cache_dir: Path | None) -> TextEmbedder:
    if name == "minilm":
        return MiniLMEmbedder(cache_dir)
    if name == "hashing":
        return HashingTextEmbedder()
    raise ValueError(f"unknown embedder {name!r} (minilm or hashing)")


def register(app: typer.Typer) -> None:
    @app.command("intents")
    def intents_cmd(
        train: Annotated[Path, typer.Option("--train", help="CLINC150-layout JSON to train on (train + oos_train).")],
        eval_file: Annotated[
            Path, typer.Option("--eval", help="CLINC150-layout JSON to evaluate on (test+oos_test, else val+oos_val).")
        ],
        json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as one JSON object.")] = None,
        embedder: Annotated[str, typer.Option("--embedder", help="minilm or hashing")] = "minilm",
        c: Annotated[float, typer.Option("--c", min=1e-4, help="SVM regularisation C.")] = 1.0,
        embedding_weight: Annotated[
            float, typer.Option("--embedding-weight", min=0.0, help="Weight of the sentence embedding block.")
        ] = 2.0,
        max_accuracy_drop: Annotated[
            float,
            typer.Option(
                "--max-accuracy-drop",
                min=0.0,
                max=1.0,
                help="In-scope accuracy the OOS threshold may cost on the held-out part of train.",
            ),
        ] = 0.005,
    ) -> None:
        """In-scope accuracy and out-of-scope recall/precision of the intent router."""

        console = Console()
        cache_dir = get_settings().model_cache_dir
        try:
            figures = run_bench(
                train,
                eval_file,
                make_embedder(embedder, cache_dir),
                c=c,
                embedding_weight=embedding_weight,
                max_accuracy_drop=max_accuracy_drop,
                cache_dir=cache_dir,
                console=console,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None
        table = Table(title=f"Intent routing: train {train.name}, eval {eval_file.name} [{figures['eval_split']}]")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in figures.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(table)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
            console.print(f"figures written to {json_out}")
