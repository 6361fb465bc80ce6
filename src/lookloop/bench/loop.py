"""``lookloop bench loop``: the learning loop simulated on a labelled image set, reviewers = ground truth."""

from __future__ import annotations

import math
import re
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
from lookloop.errors import BadInput, LookloopError
from lookloop.loop.finetune import FinetuneConfig, export_finetuned, finetune_backbone
from lookloop.loop.simulation import (
    POLICIES,
    Features,
    LiveCalibration,
    LoopData,
    LoopRun,
    RoundResult,
    coverage_at,
    hold_out_classes,
    labels_to_reach,
    load_loop_data,
    outlier_images,
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


def write_plot(path: Path, runs: list[LoopRun], baselines: list[LoopRun | None], alpha: float) -> None:
    """Accuracy, coverage and auto-answer error per round: one line per seed, so the spread shows."""
    import matplotlib  # slow to import: only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow to import: only plots need it

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    several = len(runs) > 1
    for i, (run, baseline) in enumerate(zip(runs, baselines, strict=True)):
        first = i == 0
        for r, style, name, shade in ((run, "-", run.strategy, 1.0), (baseline, "--", "random", 0.45)):
            if r is None or (r is baseline and baseline is run):
                continue
            a = shade * (0.5 if several else 1.0)
            xs = [p.labels_used for p in r.rounds]
            ax1.plot(xs, [p.accuracy for p in r.rounds], style, marker=None if several else "o", color="C0", alpha=a,
                     lw=1.0 if several else 1.5, label=f"accuracy ({name})" if first else None)
            ax1.plot(xs, [p.coverage for p in r.rounds], style, marker=None if several else "s", color="C1", alpha=a,
                     lw=1.0 if several else 1.5, label=f"coverage ({name})" if first else None)
            ax2.plot(xs, [p.auto_error for p in r.rounds], style, marker=None if several else "o", color="C3",
                     alpha=a, lw=1.0 if several else 1.5, label=f"auto error ({name})" if first else None)
            ax2.plot(xs, [p.worst_group_auto_error for p in r.rounds], style, color="C5", alpha=a * 0.8, lw=1.0,
                     label=f"worst group's auto error ({name})" if first else None)
        # The ceiling: what a threshold chosen with the eval labels in hand would answer at error <= alpha.
        tuned = run.final.stage == "finetune"
        oracle_xs = [p.labels_used for p in run.rounds] + ([run.final.labels_used] if tuned else [])
        oracle_ys = [p.oracle_coverage for p in run.rounds] + ([run.final.oracle_coverage] if tuned else [])
        ax1.plot(oracle_xs, oracle_ys, ":", color="C1", lw=1.2, alpha=0.6 if several else 1.0,
                 label=f"oracle coverage ({run.strategy}, ceiling)" if first else None)
        if tuned:
            ax1.scatter([run.final.labels_used], [run.final.accuracy], marker="*", s=160, color="C2",
                        label="accuracy after fine-tuning" if first else None, zorder=5)
            ax1.scatter([run.final.labels_used], [run.final.coverage], marker="*", s=160, color="C4",
                        label="coverage after fine-tuning" if first else None, zorder=5)
            ax2.scatter([run.final.labels_used], [run.final.auto_error], marker="*", s=160, color="C2",
                        label="after fine-tuning" if first else None, zorder=5)
    ax2.axhline(alpha, color="k", lw=1, ls=":", label=f"alpha = {alpha:g}")
    shown = [p for run, base in zip(runs, baselines, strict=True)
             for p in [*run.rounds, run.final, *(base.rounds if base is not None else [])]]
    worst = max([max(p.auto_error, p.worst_group_auto_error) for p in shown if p.auto_error == p.auto_error],
                default=0.0)
    ax2.set_ylim(0, max(2 * alpha, 1.1 * worst))
    ax1.set_xlabel("labels spent")
    ax2.set_xlabel("labels spent")
    ax1.set_ylim(0, 1)
    seeds = f" — {len(runs)} seeds" if several else ""
    ax1.set_title(f"accuracy and coverage, known classes (eval split){seeds}")
    ax2.set_title(f"error of auto-answers (eval split){seeds}")
    ax1.legend(fontsize=7, loc="lower right")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rounds_table(r: LoopRun) -> list[str]:
    lines = ["", f"## Rounds: {r.strategy}", "",
             "| round | stage | labels | accuracy | coverage | auto error | worst group | unknown answered "
             "| outliers answered | threshold | bound | oracle coverage | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [*r.rounds, r.final] if r.final.stage == "finetune" else r.rounds
    lines += [f"| {p.round} | {p.stage} | {p.labels_used} | {p.accuracy:.3f} | {p.coverage:.3f} | "
              f"{p.auto_error:.3f} | {p.worst_group_auto_error:.3f} | {p.unknown_auto_answer_rate:.3f} | "
              f"{p.outlier_auto_answer_rate:.3f} | {p.threshold:.4f} | {p.error_bound:.3f} | "
              f"{p.oracle_coverage:.3f} | {p.seconds:.1f} |" for p in rows]
    return lines


def write_report(path: Path, figures: dict[str, Any], runs: list[LoopRun], baselines: list[LoopRun | None],
                 command: str, notes: list[str]) -> None:
    lines = ["# Learning-loop benchmark", "", f"Command: `{command}`", ""]
    if notes:
        lines += ["## Read this first", "", *[f"- {n}" for n in notes], ""]
    lines += ["## Figures", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in figures.items()]
    final = runs[0].final
    if final.groups:
        lines += ["", f"## Groups (seed {figures.get('seed', 0)}, final round)", "",
                  "A group is decided when the ask comes in: \"unknown\" when the outlier gate flags it, else the "
                  "family of its top answer. Error is among the group's auto-answers (0 where it answered none).", "",
                  "| group | asks | auto-answered | wrong | coverage | error |", "|---|---|---|---|---|---|"]
        lines += [f"| {g} | {v.asks} | {v.answered} | {v.wrong} | {v.coverage:.3f} | {v.error:.3f} |"
                  for g, v in final.groups.items()]
    lines += _rounds_table(runs[0])
    if baselines[0] is not None and baselines[0] is not runs[0]:
        lines += _rounds_table(baselines[0])
    lines += ["", "![curves](loop.png)", "",
              "Coverage and auto-answer error are on asks about known classes. The policy (Mondrian: one "
              "Learn-then-Test threshold per group, Clopper-Pearson) and the outlier gate are calibrated by ten-fold "
              "cross-fitting on reviewer labels of live (eval) asks: each ask is judged by thresholds set on the "
              "other folds' labelled asks only; eval labels never train the model. `bound` is the certified upper "
              "bound on the auto-answer error (the worst fold and group). `oracle coverage` is the most any "
              "threshold could answer at error <= alpha if it were chosen by looking at the eval labels "
              "themselves: not achievable, a ceiling that separates a weak model from a conservative policy.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


MEAN_FIGURES = ("final_accuracy", "auto_error", "coverage", "coverage_at_10pct", "oracle_coverage",
                "oracle_coverage_at_10pct", "head_only_accuracy", "error_bound", "unknown_auto_answer_rate",
                "outlier_auto_answer_rate", "worst_group_auto_error", "known_flagged", "unknown_flagged",
                "outlier_flagged", "random_full_accuracy",
                "labels_to_match_random_full", "labels_to_match_random_full_share")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "all"


def _run_figures(run: LoopRun, baseline: LoopRun | None, data: LoopData, live: LiveCalibration) -> dict[str, Any]:
    """The flat figures of one seed's run (and its random baseline)."""
    final = run.final
    figures: dict[str, Any] = {
        "final_accuracy": final.accuracy,
        "auto_error": final.auto_error,
        "coverage": final.coverage,
        "coverage_at_10pct": coverage_at(run, 0.10),
        "oracle_coverage": final.oracle_coverage,
        "oracle_coverage_at_10pct": coverage_at(run, 0.10, oracle=True),
        "labels_used": final.labels_used,
        "rounds": len(run.rounds) - (1 if run.rounds and run.rounds[0].stage == "seed" else 0),
        "head_only_accuracy": run.rounds[-1].accuracy,
        "train_images": run.n_train,
        "eval_images": len(data.eval_labels),
        "calibration_labels": final.calibration_labels,
        "labels_spent": final.labels_used + final.calibration_labels,
        "error_bound": final.error_bound,
        "unknown_auto_answer_rate": final.unknown_auto_answer_rate,
        "outlier_auto_answer_rate": final.outlier_auto_answer_rate,
        "worst_group_auto_error": final.worst_group_auto_error,
        "unknown_asks": final.unknown_asks,
        "outlier_asks": final.outlier_asks,
        "known_flagged": final.known_flagged,
        "unknown_flagged": final.unknown_flagged,
        "outlier_flagged": final.outlier_flagged,
        "gate_threshold": final.gate_threshold,
        "unknown_classes_held_out": ";".join(data.held_out),
    }
    for g, v in final.groups.items():
        figures[f"group_error_{_key(g)}"] = v.error
        figures[f"group_coverage_{_key(g)}"] = v.coverage
        figures[f"group_n_{_key(g)}"] = v.asks
        figures[f"group_answered_{_key(g)}"] = v.answered
    if baseline is not None:
        target = baseline.rounds[-1].accuracy
        reached = labels_to_reach(run, target)
        figures["random_full_accuracy"] = target
        figures["labels_to_match_random_full"] = reached if reached is not None else -1
        figures["labels_to_match_random_full_share"] = (
            reached / baseline.rounds[-1].labels_used if reached is not None else math.nan
        )
    return figures


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Seed 0's figures, with the main ones (and every per-group one) replaced by the mean over seeds; the main
    ones get a sample standard deviation next to each (``_sd``; 0.0 with one seed). A seed that never matched random's
    all-label accuracy is left out of that mean and counted in ``labels_to_match_random_full_unreached``."""
    out = dict(per_seed[0])
    if len(per_seed) == 1:
        out.update({f"{k}_sd": 0.0 for k in MEAN_FIGURES if k in out})
        return out
    keys = [k for k in MEAN_FIGURES if k in out] + sorted(
        {k for f in per_seed for k in f if k.startswith("group_")})
    for k in keys:
        vals = [float(f[k]) for f in per_seed if k in f and isinstance(f[k], int | float)]
        if k.startswith("labels_to_match_random_full"):
            reached = [f for f in per_seed if f.get("labels_to_match_random_full", -1) >= 0]
            vals = [float(f[k]) for f in reached]
            out["labels_to_match_random_full_unreached"] = len(per_seed) - len(reached)
        vals = [v for v in vals if v == v]
        if not vals:
            out[k] = -1 if k == "labels_to_match_random_full" else math.nan
            if not k.startswith("group_"):
                out[f"{k}_sd"] = math.nan
            continue
        out[k] = float(np.mean(vals))
        if not k.startswith("group_"):
            out[f"{k}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


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
    unknown_classes: int = 0,
    outliers: Path | None = None,
    calibration_budget: int | None = None,
    seeds: int = 1,
    policy: str = "mondrian",
    gate_rate: float | None = 0.05,
) -> dict[str, Any]:
    """The whole benchmark; returns the flat figures (and writes plot and report when ``out`` is given).

    With ``seeds`` > 1 every seed draws its own held-out classes, label order, calibration folds and a bootstrap
    of the eval asks (which photos happen to be asked); the main figures are the mean over seeds, each with its
    ``_sd``.
    """

    started = time.perf_counter()
    if not 0.0 < alpha < 1.0:
        raise BadInput("--alpha must lie in (0, 1)")
    if seeds < 1:
        raise BadInput("--seeds must be at least 1")
    if calibration_budget is not None and calibration_budget < 0:
        raise BadInput("--calibration-budget must be at least 0")
    if policy not in POLICIES:
        raise BadInput(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    strat = get_strategy(strategy)
    settings = get_settings()
    cache_dir = model_dir or settings.model_cache_dir
    base = data or load_loop_data(dataset, eval_split)
    outlier_paths = outlier_images(outliers) if outliers is not None else []
    if outlier_paths:
        base = base.with_outliers(outlier_paths)
    hold_out_classes(base, unknown_classes, seed)  # a bad count fails before any embedding
    embedder = pretrained_embedder(cache_dir, settings.embedder)  # the backbone the server embeds with
    with _progress() as progress:
        x_train, x_eval, x_seed = _embed_all(embedder, cache_dir, [
            (base.train_paths, "embedding the backlog"), (base.eval_paths, "embedding the eval split"),
            (base.seed_paths, "embedding catalogue images")], progress)
    live = LiveCalibration(alpha, delta, policy, gate_rate, calibration_budget)

    runs: list[LoopRun] = []
    baselines: list[LoopRun | None] = []
    per_seed: list[dict[str, Any]] = []
    finetune_info: dict[str, Any] = {}
    loud = seeds == 1

    def show(name: str) -> Any:
        return lambda r: console.print(_round_table(f"{name} — round {r.round}", r)) if loud else None

    with _progress() as progress:
        task = progress.add_task(f"seeds ({strat.name}{' and random' if compare_random else ''})", total=seeds)
        for s in range(seed, seed + seeds):
            loop_data, train_idx, seed_idx = hold_out_classes(base, unknown_classes, s)
            eval_idx = np.arange(len(base.eval_paths))
            if seeds > 1:  # the spread must include the luck of which photos are asked, not just label order
                loop_data, eval_idx = loop_data.resample_eval(s)
            features: Features = (x_train[train_idx], x_eval[eval_idx], x_seed[seed_idx])
            refit = None
            if finetune:
                refit = _make_refit(loop_data, out, cache_dir, finetune_minutes, s, finetune_info,
                                    {"variant": settings.embedder, **(finetune_overrides or {})})
            run = simulate(loop_data, features, strat, rounds=rounds, budget=budget, live=live, seed=s,
                           final_refit=refit, on_round=show(strat.name))
            baseline: LoopRun | None = None
            if compare_random:
                baseline = run if strat.name == "random" else simulate(
                    loop_data, features, get_strategy("random"), rounds=rounds, budget=budget, live=live, seed=s,
                    on_round=show("random"))
            runs.append(run)
            baselines.append(baseline)
            per_seed.append(_run_figures(run, baseline, loop_data, live))
            progress.advance(task)

    figures = _aggregate(per_seed)
    figures.update({"alpha": alpha, "delta": delta, "strategy": strat.name, "policy": live.policy,
                    "gate_rate": gate_rate if gate_rate is not None else 0.0, "seeds": seeds, "seed": seed,
                    "unknown_classes": unknown_classes, "calibration_budget":
                    calibration_budget if calibration_budget is not None else -1})
    figures.update(finetune_info)
    figures["wall_seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_plot(out / "loop.png", runs, baselines, alpha)
        notes = _notes(base, runs[0], live, outlier_paths, seeds)
        write_report(out / "report.md", figures, runs, baselines, " ".join(["lookloop", *sys.argv[1:]]), notes)
    return figures


def _notes(data: LoopData, run: LoopRun, live: LiveCalibration, outliers: list[Path], seeds: int) -> list[str]:
    """What a reader must know to trust the figures: how many live labels calibrated, what was held out."""
    n = len(data.eval_labels)
    final = run.final
    notes = [f"Calibration used {final.calibration_labels} reviewer labels of the {n} distinct live (eval) asks, "
             "counted in `calibration_labels` and `labels_spent`."]
    if live.budget is None or live.budget >= n:
        notes.append("The calibration budget covers every eval ask: every live ask was labelled for calibration "
                     "(cross-fitted, so none was judged by a threshold its own label set), which a deployment "
                     "would not have.")
    if final.unknown_asks:
        notes.append(f"{final.unknown_asks} eval asks are about classes held out of the catalogue and of all "
                     "training; any answer to them counts as wrong.")
    if outliers:
        notes.append(f"{len(outliers)} outlier photos asked as well: {', '.join(p.name for p in outliers)}.")
    empty = [g for g, v in final.groups.items() if not v.answered]
    if empty:
        notes.append("Groups with no auto-answers (their error is reported as 0): "
                     + ", ".join(f"{g} ({final.groups[g].asks} asks)" for g in empty) + ".")
    if seeds > 1:
        notes.append(f"Main figures are means over {seeds} seeds, each with a sample standard deviation (`_sd`). "
                     "Every seed draws its own held-out classes, label order, calibration labels and folds, and a "
                     "bootstrap resample of the eval asks (which photos happen to be asked); the group and round "
                     "tables show the first seed.")
    return notes


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
        seed: Annotated[int, typer.Option(help="Random seed (the first one with --seeds).")] = 0,
        seeds: Annotated[int, typer.Option(help="Runs with seeds seed..seed+N-1; figures are means with _sd.")] = 1,
        unknown_classes: Annotated[int, typer.Option(help="Classes held out of the catalogue and all training "
                                                     "(a seeded draw); their eval photos are asks about unknown "
                                                     "things.")] = 0,
        outliers: Annotated[Path | None, typer.Option(help="Folder of far out-of-distribution photos, asked as "
                                                      "well (every image under it).")] = None,
        calibration_budget: Annotated[int | None, typer.Option(help="Reviewer labels of live (eval) asks the "
                                                               "policy may calibrate on (default: all).")] = None,
        policy: Annotated[str, typer.Option(help=f"Escalation policy: {', '.join(POLICIES)}.")] = "mondrian",
        gate_rate: Annotated[float, typer.Option(help="Outlier gate's false-flag rate on known classes (0: no "
                                                 "gate).")] = 0.05,
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
        if seeds < 1:
            console.print("[red]error:[/red] --seeds must be at least 1")
            raise typer.Exit(2)
        if unknown_classes < 0:
            console.print("[red]error:[/red] --unknown-classes must be at least 0")
            raise typer.Exit(2)
        if calibration_budget is not None and calibration_budget < 0:
            console.print("[red]error:[/red] --calibration-budget must be at least 0")
            raise typer.Exit(2)
        if not 0.0 <= gate_rate < 1.0:
            console.print("[red]error:[/red] --gate-rate must lie in [0, 1)")
            raise typer.Exit(2)
        if policy not in POLICIES:
            console.print(f"[red]error:[/red] unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
            raise typer.Exit(2)
        overrides = {"train_from": finetune_from} if finetune_from is not None else None
        try:
            figures = run_loop_bench(root, eval_split, strategy=strategy, rounds=rounds, budget=budget, alpha=alpha,
                                     delta=delta, finetune=finetune, finetune_minutes=finetune_minutes,
                                     compare_random=compare_random, out=out, seed=seed, finetune_overrides=overrides,
                                     unknown_classes=unknown_classes, outliers=outliers,
                                     calibration_budget=calibration_budget, seeds=seeds, policy=policy,
                                     gate_rate=gate_rate or None)
        except LookloopError as exc:
            console.print(f"[red]error:[/red] {exc.message}")
            raise typer.Exit(2) from exc
        print_figures("learning loop", figures)
        write_json(json_path, figures)
        if out is not None:
            console.print(f"plot: {out / 'loop.png'}  report: {out / 'report.md'}")
