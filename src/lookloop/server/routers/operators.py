"""The operator API behind the dashboard: metrics over time, confusion, reviewers, model versions, PNG plots."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from lookloop.errors import NotConfigured, NotFound
from lookloop.metrics import PLOTS, Metrics, compute_metrics, parse_when, plot_png
from lookloop.server.auth import Principal, require
from lookloop.server.deps import get_system
from lookloop.server.schemas import ErrorOut
from lookloop.service import Lookloop

log = logging.getLogger("lookloop.server.operators")
router = APIRouter(prefix="/v1/operators", tags=["operators"])
System = Annotated[Lookloop, Depends(get_system)]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422, 503)}

Since = Annotated[str | None, Query(description="Start: a date, an ISO time, or a span back such as 7d, 12h.")]
Until = Annotated[str | None, Query(description="End (exclusive), same forms; default now.")]
Bucket = Annotated[str, Query(pattern="^(auto|hour|day|week)$", description="Time bucket.")]
Top = Annotated[int, Query(ge=2, le=40, description="Classes shown in the confusion matrix.")]


# -- schemas ----------------------------------------------------------------------------------------------


class PointOut(BaseModel):
    start: dt.datetime
    asks: int
    ai_answered: int
    escalated: int
    coverage: float | None = Field(description="Share of asks the AI answered on its own.")
    escalation_rate: float | None
    labelled: int
    correct: int
    accuracy: float | None = Field(description="Share of labelled asks whose AI guess equals the label.")
    auto_labelled: int
    auto_correct: int
    auto_accuracy: float | None = Field(description="Accuracy over the asks answered without a human.")
    human_answered: int
    human_answer_p50_s: float | None
    human_answer_p95_s: float | None
    labels_spent: int = Field(description="Labels people produced (not imports, not wearer feedback).")
    labels_by_source: dict[str, int]


class ClassStatsOut(BaseModel):
    label: str
    support: int
    recall: float | None
    precision: float | None


class ConfusionOut(BaseModel):
    classes: list[str] = Field(description="Row and column order; rare classes fold into '(other)'.")
    matrix: list[list[int]] = Field(description="matrix[label][ai_guess] counts.")
    per_class: list[ClassStatsOut]
    total: int


class MetricsOut(BaseModel):
    since: dt.datetime
    until: dt.datetime
    bucket: str
    points: list[PointOut]
    totals: PointOut
    confusion: ConfusionOut


class ModelVersionOut(BaseModel):
    version: str
    serving: bool = False
    created_at: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)


class ModelsOut(BaseModel):
    serving: str
    registry: bool = Field(description="Whether a model registry is installed (versions are listed from it).")
    actions: bool = Field(description="Whether promote and rollback are available here.")
    versions: list[ModelVersionOut]


class SummaryOut(BaseModel):
    metrics: MetricsOut
    reviewers: list[dict[str, Any]]
    queue: dict[str, int]
    models: ModelsOut


# -- domain adapters: the human loop and the model registry are optional packages ---------------------------


def _metrics(system: Lookloop, since: str | None, until: str | None, bucket: str, top: int = 12) -> Metrics:
    with system.db.session() as s:
        return compute_metrics(s, since=parse_when(since), until=parse_when(until), bucket=bucket, top_classes=top)


def _plain(value: Any) -> dict[str, Any]:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return dict(value)


def reviewer_stats(system: Lookloop) -> list[dict[str, Any]]:
    try:
        from lookloop.humans.runtime import humans_of
    except ModuleNotFoundError:
        return []
    return [_plain(r) for r in humans_of(system).queue.stats()]


def queue_counts(system: Lookloop) -> dict[str, int]:
    try:
        from lookloop.humans.runtime import humans_of
    except ModuleNotFoundError:
        return {}
    return {k: int(v) for k, v in humans_of(system).queue.counts().items()}


def _loop_service(system: Lookloop) -> Any | None:
    """The learning loop's registry bound to this system, whose promote/rollback also swap the serving model.

    The loop package offers it as ``lookloop.loop.registry.registry_of(system)``; without it the dashboard
    lists versions read-only.
    """
    try:
        module: Any = importlib.import_module("lookloop.loop.registry")
    except ModuleNotFoundError:
        return None
    for name in ("registry_of", "get_registry"):
        factory = getattr(module, name, None)
        if callable(factory):
            return factory(system)
    return None


def _listing(system: Lookloop) -> Any | None:
    """Something with ``list()``: the bound registry, or a read-only one over the same tables."""
    bound = _loop_service(system)
    if bound is not None:
        return bound
    try:
        module: Any = importlib.import_module("lookloop.loop.registry")
    except ModuleNotFoundError:
        return None
    cls = getattr(module, "ModelRegistry", None)
    if cls is None:
        return None
    try:
        # Listing reads only the database; the artifact root matters for loading, which this never does.
        return cls(system.db, system.settings.model_cache_dir / "registry")
    except TypeError:
        log.warning("lookloop.loop.registry.ModelRegistry has an unexpected signature; versions not listed")
        return None


def _version_out(entry: Any, serving: str) -> ModelVersionOut:
    raw = _plain(entry)
    version = str(raw.get("version") or raw.get("id") or raw.get("name") or "")
    created = raw.get("created_at")
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
    info = {k: v for k, v in raw.items() if k not in ("id", "version", "created_at", "metrics", "serving")
            and isinstance(v, str | int | float | bool | None)}
    return ModelVersionOut(
        version=version,
        serving=bool(raw.get("serving")) or version == serving,
        created_at=created.isoformat() if isinstance(created, dt.datetime) else (str(created) if created else None),
        metrics=dict(metrics or {}),
        info=info,
    )


def model_versions(system: Lookloop) -> ModelsOut:
    serving = system.model_version
    reg = _listing(system)
    lister = getattr(reg, "list", None) or getattr(reg, "list_versions", None) if reg is not None else None
    entries = [_version_out(e, serving) for e in lister()] if callable(lister) else []
    if not any(v.serving for v in entries):
        entries.insert(0, ModelVersionOut(version=serving, serving=True, info={"note": "serving (not registered)"}))
    return ModelsOut(serving=serving, registry=reg is not None, actions=_loop_service(system) is not None,
                     versions=entries)


def _registry_call(system: Lookloop, name: str, *args: Any) -> None:
    reg = _loop_service(system)
    fn = getattr(reg, name, None) if reg is not None else None
    if not callable(fn):
        raise NotConfigured(
            "promote and rollback need the learning loop's registry bound to the server "
            "(lookloop.loop.registry.registry_of); use the loop's CLI meanwhile"
        )
    fn(*args)


# -- endpoints --------------------------------------------------------------------------------------------


@router.get("/metrics", response_model=MetricsOut, responses=_ERRORS,
            summary="Accuracy, coverage, escalation, human answer time and labels spent over time")
def metrics(system: System, _: Operator, since: Since = None, until: Until = None, bucket: Bucket = "auto",
            top: Top = 12) -> MetricsOut:
    return MetricsOut.model_validate(_metrics(system, since, until, bucket, top).to_dict())


@router.get("/reviewers", responses=_ERRORS, summary="Per-reviewer items, time per item, agreement, gold")
def reviewers(system: System, _: Operator) -> list[dict[str, Any]]:
    return reviewer_stats(system)


@router.get("/models", response_model=ModelsOut, responses=_ERRORS, summary="Model versions and which serves")
def models(system: System, _: Operator) -> ModelsOut:
    return model_versions(system)


@router.post("/models/{version}/promote", response_model=ModelsOut, responses=_ERRORS,
             summary="Serve this model version (needs the model registry)")
def promote(system: System, _: Operator, version: str) -> ModelsOut:
    _registry_call(system, "promote", version)
    return model_versions(system)


@router.post("/models/rollback", response_model=ModelsOut, responses=_ERRORS,
             summary="Go back to the previously served version (needs the model registry)")
def rollback(system: System, _: Operator) -> ModelsOut:
    _registry_call(system, "rollback")
    return model_versions(system)


@router.get("/loop", responses=_ERRORS,
            summary="The learning loop's curves: per model version accuracy, coverage and auto-answer error")
def loop(system: System, _: Operator) -> dict[str, Any]:
    from lookloop.loop.figures import loop_figures

    return loop_figures(system)


@router.get("/summary", response_model=SummaryOut, responses=_ERRORS,
            summary="Everything the dashboard draws, in one call")
def summary(system: System, _: Operator, since: Since = None, until: Until = None, bucket: Bucket = "auto",
            top: Top = 12) -> SummaryOut:
    return SummaryOut(
        metrics=MetricsOut.model_validate(_metrics(system, since, until, bucket, top).to_dict()),
        reviewers=reviewer_stats(system),
        queue=queue_counts(system),
        models=model_versions(system),
    )


@router.get("/plots/{name}.png", responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary=f"A chart as PNG, for reports: one of {', '.join(PLOTS)}")
def plot(system: System, _: Operator, name: str, since: Since = None, until: Until = None,
         bucket: Bucket = "auto", top: Top = 12) -> Response:
    if name not in PLOTS:
        raise NotFound(f"no plot {name!r}: choose one of {', '.join(PLOTS)}")
    png = plot_png(_metrics(system, since, until, bucket, top), name)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- the page ---------------------------------------------------------------------------------------------

_PAGES = Path(__file__).resolve().parents[1] / "pages"


def mount_dashboard_page(app: FastAPI) -> None:
    """The operator dashboard at /dashboard (its scripts, style and chart library are served from /pages/)."""

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(_PAGES / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
