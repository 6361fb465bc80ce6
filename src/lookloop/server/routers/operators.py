"""The operator API behind the dashboard: metrics over time, confusion, reviewers, model versions, PNG plots,
background jobs and exports."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import FileResponse, Response

from lookloop.errors import NotFound
from lookloop.loop.figures import loop_figures
from lookloop.metrics import PLOTS, metrics_between, parse_when, plot_png
from lookloop.server.auth import Principal
from lookloop.server.deps import get_system
from lookloop.server.policies import require
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.operators import (
    ExportIn,
    ExportQueuedOut,
    JobOut,
    MetricsOut,
    ModelsOut,
    OperatorSummaryOut,
)
from lookloop.system import Lookloop

log = logging.getLogger("lookloop.server.operators")
router = APIRouter(prefix="/v1/operators", tags=["operators"])
System = Annotated[Lookloop, Depends(get_system)]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS = error_responses(401, 403, 404, 422, 503)

Since = Annotated[str | None, Query(description="Start: a date, an ISO time, or a span back such as 7d, 12h.")]
Until = Annotated[str | None, Query(description="End (exclusive), same forms; default now.")]
Bucket = Annotated[str, Query(pattern="^(auto|hour|day|week)$", description="Time bucket.")]
Top = Annotated[int, Query(ge=2, le=40, description="Classes shown in the confusion matrix.")]


# -- replies ------------------------------------------------------------------------------------------------


def _metrics(system: Lookloop, since: str | None, until: str | None, bucket: str, top: int) -> MetricsOut:
    figures = metrics_between(system.db, since, until, bucket=bucket, top_classes=top,
                              guarantees=system.serving.guarantees())
    return MetricsOut.model_validate(figures.to_dict())


def _reviewers(system: Lookloop) -> list[dict[str, Any]]:
    return [asdict(r) for r in system.humans.queue.stats()]


def _models(system: Lookloop, done: str | None = None) -> ModelsOut:
    return ModelsOut.of(system.model_version, system.registry.list(), rollback_to=system.registry.rollback_target(),
                        done=done)


# -- endpoints --------------------------------------------------------------------------------------------


@router.get("/metrics", response_model=MetricsOut, responses=_ERRORS,
            summary="Accuracy, coverage, escalation, human answer time and labels spent over time; per-group "
            "error, coverage, escalation and guarantee")
def metrics(system: System, _: Operator, since: Since = None, until: Until = None, bucket: Bucket = "auto",
            top: Top = 12) -> MetricsOut:
    return _metrics(system, since, until, bucket, top)


@router.get("/reviewers", responses=_ERRORS, summary="Per-reviewer items, time per item, agreement, gold")
def reviewers(system: System, _: Operator) -> list[dict[str, Any]]:
    return _reviewers(system)


@router.get("/jobs", response_model=list[JobOut], responses=_ERRORS,
            summary="Background jobs, newest first: state, progress, attempts, errors")
def jobs(system: System, _: Operator,
         state: Annotated[str | None, Query(pattern="^(queued|running|retrying|succeeded|failed)$")] = None,
         task: Annotated[str | None, Query(max_length=64)] = None,
         limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[JobOut]:
    return [JobOut.model_validate(asdict(j)) for j in system.jobs.recent(state=state, task=task, limit=limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=_ERRORS, summary="One background job")
def job(system: System, _: Operator, job_id: str) -> JobOut:
    return JobOut.model_validate(asdict(system.jobs.get(job_id)))


@router.post("/exports", response_model=ExportQueuedOut, status_code=202, responses=_ERRORS,
             summary="Queue an export (JSONL, HF dataset, KTO, image folder) as a background job")
def export(system: System, _: Operator, body: ExportIn) -> ExportQueuedOut:
    out = system.exports.path_for(body.format, body.name)
    job_id = system.exports.queue(
        body.format, out, since=parse_when(body.since), until=parse_when(body.until), labelled_only=body.labelled_only,
        frames=body.frames, skill=body.skill, imports=body.imports, force=body.force)
    return ExportQueuedOut(job_id=job_id, path=str(out), job=JobOut.model_validate(asdict(system.jobs.get(job_id))))


@router.get("/models", response_model=ModelsOut, responses=_ERRORS, summary="Model versions and which serves")
def models(system: System, _: Operator) -> ModelsOut:
    return _models(system)


@router.post("/models/{version}/promote", response_model=ModelsOut, responses=_ERRORS,
             summary="Serve this model version (needs the model registry)")
def promote(system: System, _: Operator, version: str) -> ModelsOut:
    before = system.model_version
    system.serving.promote(version)
    now = system.model_version
    if now == before:
        return _models(system, f"{now} serves already")
    return _models(system, f"Promoted {now}: it serves now instead of {before}; roll back returns to {before}")


@router.post("/models/rollback", response_model=ModelsOut, responses=_ERRORS,
             summary="Go back to the previously served version (needs the model registry)")
def rollback(system: System, _: Operator) -> ModelsOut:
    before = system.model_version
    system.serving.rollback()
    return _models(system, f"Rolled back: {system.model_version} serves again instead of {before}")


@router.get("/loop", responses=_ERRORS,
            summary="The learning loop's curves: per model version accuracy, coverage and auto-answer error")
def loop(system: System, _: Operator) -> dict[str, Any]:
    return loop_figures(system.serving)


@router.get("/summary", response_model=OperatorSummaryOut, responses=_ERRORS,
            summary="Everything the dashboard draws, in one call")
def summary(system: System, _: Operator, since: Since = None, until: Until = None, bucket: Bucket = "auto",
            top: Top = 12) -> OperatorSummaryOut:
    return OperatorSummaryOut(
        metrics=_metrics(system, since, until, bucket, top),
        reviewers=_reviewers(system),
        queue=system.humans.queue.counts(),
        models=_models(system),
    )


@router.get("/plots/{name}.png", responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
            response_class=Response, summary=f"A chart as PNG, for reports: one of {', '.join(PLOTS)}")
def plot(system: System, _: Operator, name: str, since: Since = None, until: Until = None,
         bucket: Bucket = "auto", top: Top = 12) -> Response:
    if name not in PLOTS:
        raise NotFound(f"no plot {name!r}: choose one of {', '.join(PLOTS)}")
    png = plot_png(metrics_between(system.db, since, until, bucket=bucket, top_classes=top), name)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


# -- the page ---------------------------------------------------------------------------------------------

_PAGES = Path(__file__).resolve().parents[1] / "pages"


def mount_dashboard_page(app: FastAPI) -> None:
    """The operator dashboard at /dashboard (its scripts, style and chart library are served from /pages/)."""

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_page() -> FileResponse:
        return FileResponse(_PAGES / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
