"""The operator API behind the dashboard: metrics over time, confusion, reviewers, model versions, PNG plots."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from lookloop.errors import NotFound
from lookloop.loop.figures import loop_figures
from lookloop.loop.registry import ModelVersion
from lookloop.metrics import PLOTS, Metrics, compute_metrics, parse_when, plot_png
from lookloop.server.auth import Principal, require
from lookloop.server.deps import get_system
from lookloop.server.schemas import ErrorOut
from lookloop.system import Lookloop

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


# -- adapters ------------------------------------------------------------------------------------------------


def _metrics(system: Lookloop, since: str | None, until: str | None, bucket: str, top: int = 12) -> Metrics:
    with system.db.session() as s:
        return compute_metrics(s, since=parse_when(since), until=parse_when(until), bucket=bucket, top_classes=top)


def reviewer_stats(system: Lookloop) -> list[dict[str, Any]]:
    return [asdict(r) for r in system.humans.queue.stats()]


def queue_counts(system: Lookloop) -> dict[str, int]:
    return {k: int(v) for k, v in system.humans.queue.counts().items()}


def _version_out(version: ModelVersion, serving: str) -> ModelVersionOut:
    raw = version.as_dict()
    info = {k: v for k, v in raw.items() if k not in ("id", "created_at", "metrics", "serving")
            and isinstance(v, str | int | float | bool | None)}
    return ModelVersionOut(
        version=version.id,
        serving=version.serving or version.id == serving,
        created_at=version.created_at.isoformat(),
        metrics=dict(version.metrics or {}),
        info=info,
    )


def model_versions(system: Lookloop) -> ModelsOut:
    serving = system.model_version
    entries = [_version_out(v, serving) for v in system.registry.list()]
    if not any(v.serving for v in entries):
        entries.insert(0, ModelVersionOut(version=serving, serving=True, info={"note": "serving (not registered)"}))
    return ModelsOut(serving=serving, registry=True, actions=True, versions=entries)


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
    system.serving.promote(version)
    return model_versions(system)


@router.post("/models/rollback", response_model=ModelsOut, responses=_ERRORS,
             summary="Go back to the previously served version (needs the model registry)")
def rollback(system: System, _: Operator) -> ModelsOut:
    system.serving.rollback()
    return model_versions(system)


@router.get("/loop", responses=_ERRORS,
            summary="The learning loop's curves: per model version accuracy, coverage and auto-answer error")
def loop(system: System, _: Operator) -> dict[str, Any]:
    return loop_figures(system.serving)


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
