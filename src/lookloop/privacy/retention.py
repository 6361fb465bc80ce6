"""Retention: sealed originals expire after ``Settings.original_retention_days``; frames kept only for a
human answer go once it came. ``lookloop privacy purge`` runs it once; the server runs it every
``Settings.purge_interval_s`` seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from lookloop.privacy import audit
from lookloop.privacy.storage import PurgeReport

log = logging.getLogger("lookloop.privacy")


def purge(system: Any, *, actor: str = "system", role: str = "") -> PurgeReport:
    """One purge pass, audited when it removed anything."""
    report: PurgeReport = system.privacy.purge()
    if report.originals or report.transient_frames:
        audit.record(system.db, actor=actor, role=role, action="privacy.purge", target="frames",
                     originals=report.originals, transient_frames=report.transient_frames)
    return report


async def purge_forever(system: Any, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await run_in_threadpool(purge, system)
        except Exception:  # the next pass retries; a failed purge must not stop the server
            log.exception("the periodic purge failed")


def install_purge(app: FastAPI) -> None:
    """Wraps the app's lifespan so a periodic purge runs while it serves."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            system = a.state.system
            await run_in_threadpool(system.privacy.resume)
            interval = float(system.settings.purge_interval_s)
            task = asyncio.create_task(purge_forever(system, interval)) if interval > 0 else None
            try:
                yield state
            finally:
                if task is not None:
                    task.cancel()
                system.privacy.flush(timeout=10)

    app.router.lifespan_context = lifespan
