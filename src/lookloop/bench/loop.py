"""``lookloop bench loop``: the learning loop simulated on a labelled image set, reviewers = ground truth."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lookloop.bench._common import console, print_figures, write_json
from lookloop.config import get_settings
from lookloop.errors import LookloopError
from lookloop.loop.finetune import FinetuneConfig, export_finetuned, finetune_backbone
from lookloop.loop.simulation import (
    Features,
    LoopData,
    LoopRun,
    RoundResult,
    coverage_at,
    labels_to_reach,
    load_loop_data,
    simulate,
)
from lookloop.loop.strategies import STRATEGIES, get_strategy
from lookloop.models.embcache import EmbeddingCache, embed_paths
from lookloop.models.embedder import ImageEmbedder, finetuned_embedder, pretrained_embedder


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _embed_all(
    embedder: ImageEmbedder, cache_dir: Path, parts: list[tuple[list[Path], str]], progress: Progress
) -> list[np.ndarray]:
    """Embeddings of each list of paths, through the embedder's cache in ``cache_dir``, one progress bar each."""
    cache = EmbeddingCache(cache_dir, embedder.version, embedder.dim)
    tasks: dict[str, TaskID] = {}

    def tick(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = progress.add_task(what, total=total)
        progress.update(tasks[what], completed=done, total=total)

    out = [embed_paths(cache, embedder, paths, progress=tick, what=what) for paths, what in parts]
    for task in tasks.values():
        progress.remove_task(task)
    return out


def _round_table(title: str, r: RoundResult) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("round", "stage", "labels", "accuracy", "coverage", "auto error", "threshold", "bound", "oracle",
                "s"):
        t.add_column(col, justify="right")
    t.add_row(str(r.round), r.stage, str(r.labels_used), f"{r.accuracy:.3f}", f"{r.coverage:.3f}",
              f"{r.auto_error:.3f}", f"{r.threshold:.4f}", f"{r.error_bound:.3f}", f"{r.oracle_coverage:.3f}",
              f"{r.seconds:.1f}")
    return t


def write_plot(path: Path, run: LoopRun, baseline: LoopRun | None, alpha: float) -> None:
    import matplotlib  # slow to import: only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow to import: only plots need it

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r, style, name, shade in ((run, "-", run.strategy, 1.0), (baseline, "--", "random", 0.45)):
        if r is None or (r is baseline and baseline is run):
            continue
        xs = [p.labels_used for p in r.rounds]
        ax1.plot(xs, [p.accuracy for p in r.rounds], style, marker="o", color="C0", alpha=shade,
                 label=f"accuracy ({name})")
        ax1.plot(xs, [p.coverage for p in r.rounds], style, marker="s", color="C1", alpha=shade,
                 label=f"coverage ({name})")
        ax2.plot(xs, [p.auto_error for p in r.rounds], style, marker="o", color="C3", alpha=shade,
                 label=f"auto error ({name})")
    # The ceiling: what a threshold chosen with the eval labels in hand would answer at error <= alpha.
    oracle_xs = [p.labels_used for p in run.rounds] + ([run.final.labels_used] if run.final.stage == "finetune" else [])
    oracle_ys = [p.oracle_coverage for p in run.rounds] + (
        [run.final.oracle_coverage] if run.final.stage == "finetune" else [])
    ax1.plot(oracle_xs, oracle_ys, ":", color="C1", lw=1.2, label=f"oracle coverage ({run.strategy}, ceiling)")
    if run.final.stage == "finetune":
        ax1.scatter([run.final.labels_used], [run.final.accuracy], marker="*", s=160, color="C2",
                    label="accuracy after fine-tuning", zorder=5)
        ax1.scatter([run.final.labels_used], [run.final.coverage], marker="*", s=160, color="C4",
                    label="coverage after fine-tuning", zorder=5)
        ax2.scatter([run.final.labels_used], [run.final.auto_error], marker="*", s=160, color="C2",
                    label="after fine-tuning", zorder=5)
    ax2.axhline(alpha, color="k", lw=1, ls=":", label=f"alpha = {alpha:g}")
    shown = [*run.rounds, run.final, *(baseline.rounds if baseline is not None else [])]
    worst = max([p.auto_error for p in shown if p.auto_error == p.auto_error], default=0.0)
    ax2.set_ylim(0, max(2 * alpha, 1.1 * worst))
    ax1.set_xlabel("labels spent")
    ax2.set_xlabel("labels spent")
    ax1.set_ylim(0, 1)
    ax1.set_title("accuracy and coverage (eval split)")
    ax2.set_title("error of auto-answers (eval split)")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, figures: dict[str, Any], run: LoopRun, baseline: LoopRun | None, command: str) -> None:
    lines = ["# Learning-loop benchmark", "", f"Command: `{command}`", "", "## Figures", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items()]
    for r in (run, baseline):
        if r is None:
            continue
        lines += ["", f"## Rounds: {r.strategy}", "",
                  "| round | stage | labels | accuracy | coverage | auto error | threshold | bound | oracle coverage "
                  "| seconds |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        rows = [*r.rounds, r.final] if r.final.stage == "finetune" else r.rounds
        lines += [f"| {p.round} | {p.stage} | {p.labels_used} | {p.accuracy:.3f} | {p.coverage:.3f} | "
                  f"{p.auto_error:.3f} | {p.threshold:.4f} | {p.error_bound:.3f} | {p.oracle_coverage:.3f} | "
                  f"{p.seconds:.1f} |" for p in rows]
    lines += ["", "![curves](loop.png)", "",
              "Coverage and auto-answer error: the conformal policy (Learn-then-Test, Clopper-Pearson) calibrated",
              "by five-fold cross-fitting on reviewer spot checks of the live (eval) asks: each ask is judged by a",
              "threshold set on the other folds' labels only; eval labels never train the model. `bound` is the",
              "certified upper bound on the auto-answer error (the worse fold). `oracle coverage` is the most any",
              "threshold could answer at error <= alpha if it were chosen by looking at the eval labels themselves:",
              "not achievable, a ceiling that separates a weak model from a conservative policy.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def run_loop_bench(
    dataset: Path,
    eval_split: str,
    *,
    strategy: str = "margin",
    rounds: int = 10,
    budget: int | None = None,
    alpha: float = 0.05,
    delta: float = 0.1,
    finetune: bool = False,
    finetune_minutes: float = 25.0,
    compare_random: bool = False,
    out: Path | None = None,
    model_dir: Path | None = None,
    seed: int = 0,
    data: LoopData | None = None,
    finetune_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the flat figures (and writes plot and report when ``out`` is given)."""

    started = time.perf_counter()
    if not 0.0 < alpha < 1.0:
        raise typer.BadParameter("--alpha must lie in (0, 1)")
    strat = get_strategy(strategy)
    settings = get_settings()
    cache_dir = model_dir or settings.model_cache_dir
    loop_data = data or load_loop_data(dataset, eval_split)
    embedder = pretrained_embedder(cache_dir, settings.embedder)  # the backbone the server embeds with
    with _progress() as progress:
        x_train, x_eval, x_seed = _embed_all(embedder, cache_dir, [
            (loop_data.train_paths, "embedding the backlog"), (loop_data.eval_paths, "embedding the eval split"),
            (loop_data.seed_paths, "embedding catalogue images")], progress)
    features: Features = (x_train, x_eval, x_seed)

    refit = None
    finetune_info: dict[str, Any] = {}
    if finetune:
        refit = _make_refit(loop_data, out, cache_dir, finetune_minutes, seed, finetune_info,
                            {"variant": settings.embedder, **(finetune_overrides or {})})

    def show(name: str) -> Any:
        return lambda r: console.print(_round_table(f"{name} — round {r.round}", r))

    run = simulate(loop_data, features, strat, rounds=rounds, budget=budget, alpha=alpha, delta=delta, seed=seed,
                   final_refit=refit, on_round=show(strat.name))
    baseline: LoopRun | None = None
    figures: dict[str, Any] = {
        "final_accuracy": run.final.accuracy,
        "auto_error": run.final.auto_error,
        "coverage": run.final.coverage,
        "coverage_at_10pct": coverage_at(run, 0.10),
        "oracle_coverage": run.final.oracle_coverage,
        "oracle_coverage_at_10pct": coverage_at(run, 0.10, oracle=True),
        "alpha": alpha,
        "labels_used": run.final.labels_used,
        "rounds": len(run.rounds) - (1 if run.rounds and run.rounds[0].stage == "seed" else 0),
        "strategy": strat.name,
        "head_only_accuracy": run.rounds[-1].accuracy,
        "train_images": run.n_train,
        "eval_images": len(loop_data.eval_labels),
        "calibration_labels": run.final.calibration_labels,
        "error_bound": run.final.error_bound,
        "delta": delta,
    }
    if compare_random:
        baseline = run if strat.name == "random" else simulate(
            loop_data, features, get_strategy("random"), rounds=rounds, budget=budget, alpha=alpha, delta=delta,
            seed=seed, on_round=show("random"))
        target = baseline.rounds[-1].accuracy
        reached = labels_to_reach(run, target)
        figures["random_full_accuracy"] = target
        figures["labels_to_match_random_full"] = reached if reached is not None else -1
        figures["labels_to_match_random_full_share"] = (
            reached / baseline.rounds[-1].labels_used if reached is not None else math.nan
        )
    figures.update(finetune_info)
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_plot(out / "loop.png", run, baseline, alpha)

        write_report(out / "report.md", figures, run, baseline, " ".join(["lookloop", *sys.argv[1:]]))
    return figures


def _make_refit(
    data: LoopData, out: Path | None, cache_dir: Path, minutes: float, seed: int, info: dict[str, Any],
    overrides: dict[str, Any] | None,
) -> Any:
    def refit(labelled_idx: list[int]) -> Features:
        paths = list(data.seed_paths) + [data.train_paths[i] for i in labelled_idx]
        labels = list(data.seed_labels) + [data.train_labels[i] for i in labelled_idx]
        cfg = FinetuneConfig(time_budget_s=minutes * 60, seed=seed, **(overrides or {}))
        with _progress() as progress:
            tasks: dict[str, Any] = {}

            def tick(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = progress.add_task(what, total=total)
                progress.update(tasks[what], completed=done, total=total)

            result = finetune_backbone(paths, labels, cfg, progress=tick)
            model_root = (out or cache_dir) / "finetuned"
            onnx = export_finetuned(result, model_root, variant=cfg.variant)
            emb = finetuned_embedder(onnx, cfg.variant)
            x_train, x_eval, x_seed = _embed_all(emb, model_root, [
                (data.train_paths, "embedding with the tuned backbone"),
                (data.eval_paths, "embedding the eval split (tuned)"),
                (data.seed_paths, "embedding catalogue images (tuned)")], progress)
        info.update({"finetune_seconds": round(result.train_seconds, 1), "finetune_epochs": result.epochs_run,
                     "finetune_onnx": str(onnx)})
        return x_train, x_eval, x_seed

    return refit


def register(app: typer.Typer) -> None:
    @app.command("loop")
    def loop_cmd(
        dataset: Annotated[Path | None, typer.Option(help="Grocery Store layout or image-folder tree.")] = None,
        eval_split: Annotated[str, typer.Option(help="Split file (or folder) relative to DIR.")] = "val.txt",
        strategy: Annotated[str, typer.Option(help=f"Query strategy: {', '.join(STRATEGIES)}.")] = "margin",
        rounds: Annotated[int, typer.Option(help="Labelling rounds.")] = 10,
        budget: Annotated[int | None, typer.Option(help="Labels per round (default: all train labels over the "
                                                   "rounds).")] = None,
        alpha: Annotated[float, typer.Option(help="Promised error rate of auto-answers.")] = 0.05,
        delta: Annotated[float, typer.Option(help="Allowed chance that the promise fails.")] = 0.1,
        finetune: Annotated[bool, typer.Option("--finetune", help="Fine-tune the backbone after the rounds.")] = False,
        finetune_minutes: Annotated[float, typer.Option(help="Time budget of the fine-tuning run.")] = 20.0,
        finetune_from: Annotated[int | None, typer.Option(help="First trainable block of the backbone (0-15; "
                                                          "default from the recipe).")] = None,
        compare_random: Annotated[bool, typer.Option("--compare-random", help="Also run random sampling.")] = False,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
        out: Annotated[Path | None, typer.Option(help="Folder for the plot and the markdown report.")] = None,
    ) -> None:
        """Simulated deployment: accuracy, coverage and auto-answer error as labels arrive."""

        root = dataset or get_settings().grocery_dir
        if strategy not in STRATEGIES:
            console.print(f"[red]error:[/red] unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
            raise typer.Exit(2)
        if rounds < 1 or (budget is not None and budget < 1):
            console.print("[red]error:[/red] --rounds and --budget must be at least 1")
            raise typer.Exit(2)
        if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
            console.print("[red]error:[/red] --alpha and --delta must lie in (0, 1)")
            raise typer.Exit(2)
        if finetune_from is not None and not 0 <= finetune_from <= 15:
            console.print("[red]error:[/red] --finetune-from must lie in 0..15")
            raise typer.Exit(2)
        overrides = {"train_from": finetune_from} if finetune_from is not None else None
        try:
            figures = run_loop_bench(root, eval_split, strategy=strategy, rounds=rounds, budget=budget, alpha=alpha,
                                     delta=delta, finetune=finetune, finetune_minutes=finetune_minutes,
                                     compare_random=compare_random, out=out, seed=seed, finetune_overrides=overrides)
        except LookloopError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from exc
        print_figures("learning loop", figures)
        write_json(json_path, figures)
        if out is not None:
            console.print(f"plot: {out / 'loop.png'}  report: {out / 'report.md'}")
