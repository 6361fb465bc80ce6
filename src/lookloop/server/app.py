"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lookloop import telemetry
from lookloop.config import Settings, get_settings
from lookloop.errors import LookloopError, TooManyRequests
from lookloop.server import edge, ratelimit
from lookloop.server.policies import Access
from lookloop.server.routers import (
    asks,
    capabilities,
    catalog,
    devices,
    health,
    operators,
    pages,
    privacy,
    proposals,
    review,
    voice,
)
from lookloop.server.routers import auth as auth_router
from lookloop.system import Lookloop

log = logging.getLogger("lookloop.server")


def create_app(settings: Settings | None = None, *, system: Lookloop | None = None, warm: bool = True) -> FastAPI:
    """Builds the app. ``warm`` loads the models at start-up so the first ask is as fast as the rest."""
    settings = settings or (system.settings if system else get_settings())
    the_system = system or Lookloop(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_system.migrate()
        the_system.humans.hub.bind(asyncio.get_running_loop())  # live streams are served from this loop
        the_system.listen()  # the other workers' escalations, answers and labels
        telemetry.register_worker(settings.worker_id)
        if warm:
            the_system.warm()
        # Background jobs: on SQLite this process runs them (unfinished ones first, then the periodic purge);
        # on Postgres `lookloop worker` does, and this only queues what a restart left undone.
        the_system.jobs.start()
        await run_in_threadpool(the_system.privacy.resume)
        yield
        the_system.privacy.flush(timeout=10)
        the_system.close()

    app = FastAPI(
        title="lookloop",
        version="0.1.0",
        summary="Look and ask: the AI answers what it is sure of and asks a human for the rest.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from local assets (mount_start_and_docs): no CDN
        redoc_url=None,
    )
    app.state.system = the_system
    app.state.access = Access.of(the_system)  # who may do what: every router asks it
    app.state.ask_threads = CapacityLimiter(settings.ask_threads_per_worker)

    @app.exception_handler(LookloopError)
    async def domain_error(_: Request, exc: LookloopError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        # Answered outside every middleware (Starlette's error middleware is outermost): add the headers here.
        headers = {k.decode(): v.decode() for k, v in edge.security_headers(request.scope)}
        return JSONResponse({"detail": "internal error; the operator's log has the details"}, status_code=500,
                            headers=headers)

    @app.get("/healthz", tags=["operators"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_version": the_system.model_version}

    app.include_router(health.router)  # /healthz/live, /healthz/ready, /metrics
    app.include_router(devices.router)  # before asks: /v1/asks/{id}/feedback lives there
    app.include_router(voice.router)  # before asks: POST /v1/asks/voice, /v1/speech, /v1/tts
    voice.mount_simulator_page(app)  # /simulator
    app.include_router(asks.router)
    app.include_router(catalog.router)
    app.include_router(capabilities.router)  # /v1/capabilities, /v1/notes, /v1/memory
    app.include_router(auth_router.router)
    app.include_router(review.router)
    review.mount_review_page(app)  # /review
    pages.mount_page_assets(app)  # /pages/…: the pages' scripts and styles
    pages.mount_start_and_docs(app)  # /, /start, /docs, /redoc (local assets)
    app.include_router(operators.router)
    app.include_router(proposals.router)  # /v1/operators/proposals
    operators.mount_dashboard_page(app)  # /dashboard
    app.include_router(privacy.router)
    edge.install_body_caps(app, settings)  # innermost: a body over its route's cap is refused (413)
    ratelimit.install(app, settings)  # rate limits + audit of operators' writes
    edge.install_headers(app)  # outermost: security headers on every response
    return app
