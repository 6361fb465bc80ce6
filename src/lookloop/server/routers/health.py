"""Health and figures for whoever runs the service: liveness, readiness and /metrics (Prometheus)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from lookloop import telemetry
from lookloop.server.auth import bearer_token, principal_for_token
from lookloop.server.deps import get_access, get_system
from lookloop.server.policies import Access
from lookloop.server.schemas.errors import error_responses
from lookloop.system import Lookloop

router = APIRouter(tags=["operators"])
log = logging.getLogger("lookloop.server")
_loading = threading.Lock()


@router.get("/healthz/live", summary="The process is up (restart it when this fails)")
def live() -> dict[str, str]:
    # Touches nothing outside the process: a database outage must not get healthy workers restarted.
    return {"status": "alive"}


@router.get("/healthz/ready", summary="Ready to answer asks: database reachable, schema current, model loaded",
            responses={503: {"description": "Not ready: the reasons are in 'checks'"}})
def ready(system: Lookloop = Depends(get_system)) -> JSONResponse:  # noqa: B008
    checks: dict[str, str] = {}
    try:
        system.db.ping()
        checks["database"] = "ok"
        pending = system.db.pending_migrations()
        checks["migrations"] = "ok" if not pending else f"not at head: {', '.join(sorted(pending))} pending"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        checks["migrations"] = "unknown"
    checks["model"] = "ok" if system.serving.loaded else _load_model(system)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


def _load_model(system: Lookloop) -> str:
    """Starts loading the serving model once (a start without warm-up): ready when it is in memory."""
    if not _loading.acquire(blocking=False):
        return "loading"

    def load() -> None:
        try:
            system.serving.model  # noqa: B018 - loads embedder, examples and head
        except Exception:  # noqa: BLE001 - readiness keeps reporting it; the log says why
            log.exception("the serving model could not be loaded")
        finally:
            _loading.release()

    threading.Thread(target=load, name="lookloop-ready-load", daemon=True).start()
    return "loading"


@router.get("/metrics", response_class=Response, responses=error_responses(401, 403),
            summary="Prometheus figures: ask latency by skill, escalations, queue, jobs, workers")
def metrics(request: Request, system: Lookloop = Depends(get_system),  # noqa: B008
            access: Access = Depends(get_access)) -> Response:  # noqa: B008
    access.metrics_reader(bearer_token(request), lambda token: principal_for_token(system, token))
    body = telemetry.render(_queue_counts(system))
    return Response(body, media_type=telemetry.CONTENT_TYPE)


def _queue_counts(system: Lookloop) -> Callable[[], dict[str, int]]:
    def counts() -> dict[str, int]:
        try:
            return system.humans.queue.counts()
        except SQLAlchemyError:
            return {}  # the figures of the processes still go out when the database does not answer

    return counts
