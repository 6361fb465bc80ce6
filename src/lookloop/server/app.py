"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from lookloop.config import Settings, get_settings
from lookloop.errors import LookloopError
from lookloop.service import Lookloop

log = logging.getLogger("lookloop.server")


def create_app(settings: Settings | None = None, *, system: Lookloop | None = None, warm: bool = True) -> FastAPI:
    """Builds the app. ``warm`` loads the models at start-up so the first ask is as fast as the rest."""
    settings = settings or (system.settings if system else get_settings())
    the_system = system or Lookloop(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_system.migrate()
        if warm:
            the_system.identify_model  # noqa: B018 - loads embedder, examples and head
        yield
        the_system.embedding_cache.save() if the_system._emb_cache is not None else None

    app = FastAPI(
        title="lookloop",
        version="0.1.0",
        summary="Look and ask: the AI answers what it is sure of and asks a human for the rest.",
        lifespan=lifespan,
    )
    app.state.system = the_system

    @app.exception_handler(LookloopError)
    async def domain_error(_: Request, exc: LookloopError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"detail": "internal error; the operator's log has the details"}, status_code=500)

    @app.get("/healthz", tags=["operators"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model_version": the_system.model_version}

    from lookloop.server.routers import asks, catalog

    app.include_router(asks.router)
    app.include_router(catalog.router)
    return app
