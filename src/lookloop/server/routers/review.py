"""The review queue for humans: claim, answer, skip, release; live items over a WebSocket; stats; gold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from lookloop.errors import LookloopError
from lookloop.humans.live import relay
from lookloop.humans.runtime import Humans, item_event
from lookloop.humans.schemas import (
    GoldIn,
    QueueCountsOut,
    ReviewAnswerIn,
    ReviewAnswerOut,
    ReviewerStatsOut,
    ReviewItemOut,
)
from lookloop.server.auth import Principal, require, websocket_principal
from lookloop.server.deps import get_system
from lookloop.server.schemas import ErrorOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/review", tags=["review"])
System = Annotated[Lookloop, Depends(get_system)]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 409, 422)}


def _humans(system: Lookloop) -> Humans:
    return system.humans


def _out(system: Lookloop, item_id: str) -> ReviewItemOut:
    return ReviewItemOut.model_validate(item_event(_humans(system).queue.get(item_id)))


@router.post("/next", response_model=ReviewItemOut | None, responses=_ERRORS,
             summary="Claim the next item (live first); null when the queue is empty")
def next_item(system: System, reviewer: Reviewer) -> ReviewItemOut | None:
    item = _humans(system).queue.next(reviewer)
    return ReviewItemOut.model_validate(item_event(item)) if item else None


@router.get("/queue", response_model=QueueCountsOut, responses=_ERRORS)
def queue_counts(system: System, _: Reviewer) -> QueueCountsOut:
    return QueueCountsOut(**_humans(system).queue.counts())


@router.get("/items/{item_id}", response_model=ReviewItemOut, responses=_ERRORS)
def get_item(system: System, item_id: str, _: Reviewer) -> ReviewItemOut:
    return _out(system, item_id)


@router.get("/items/{item_id}/frame", response_class=Response, responses=_ERRORS)
def item_frame(system: System, item_id: str, _: Reviewer) -> Response:
    item = _humans(system).queue.get(item_id)
    data = system.humans.queue.frame_bytes(item)
    return Response(data, media_type=_media_type(data), headers={"Cache-Control": "private, max-age=300"})


@router.post("/items/{item_id}/claim", response_model=ReviewItemOut, responses=_ERRORS)
def claim(system: System, item_id: str, reviewer: Reviewer) -> ReviewItemOut:
    item = _humans(system).queue.claim(item_id, reviewer)
    return ReviewItemOut.model_validate(item_event(item))


@router.post("/items/{item_id}/answer", response_model=ReviewAnswerOut, responses=_ERRORS)
def answer(system: System, item_id: str, body: ReviewAnswerIn, reviewer: Reviewer) -> ReviewAnswerOut:
    sub = _humans(system).queue.submit(item_id, reviewer, body.action, body.value)
    return ReviewAnswerOut(item_id=item_id, resolved=sub.resolved, status=sub.status, value=sub.value)


@router.post("/items/{item_id}/skip", status_code=204, responses=_ERRORS)
def skip(system: System, item_id: str, reviewer: Reviewer) -> Response:
    _humans(system).queue.skip(item_id, reviewer)
    return Response(status_code=204)


@router.post("/items/{item_id}/release", status_code=204, responses=_ERRORS)
def release(system: System, item_id: str, reviewer: Reviewer) -> Response:
    _humans(system).queue.release(item_id, reviewer)
    return Response(status_code=204)


@router.get("/stats", response_model=list[ReviewerStatsOut], responses=_ERRORS,
            summary="Per-reviewer stats (operators see everyone, reviewers themselves)")
def stats(system: System, principal: Reviewer) -> list[ReviewerStatsOut]:
    who = None if principal.allows("operator") else principal.account_id
    return [ReviewerStatsOut.of(r) for r in _humans(system).queue.stats(who)]


@router.post("/gold", response_model=ReviewItemOut, status_code=201, responses=_ERRORS,
             summary="Make a settled ask a gold item (its known answer scores reviewers)")
def add_gold(system: System, body: GoldIn, _: Operator) -> ReviewItemOut:
    item = _humans(system).queue.gold_from_ask(body.ask_id, body.answer)
    return ReviewItemOut.model_validate(item_event(item))


@router.websocket("/stream")
async def review_stream(websocket: WebSocket) -> None:
    """On-duty reviewers: live escalations arrive as {"type": "item", "item": {...}} already locked to them."""
    system: Lookloop = websocket.app.state.system
    try:
        principal = await run_in_threadpool(websocket_principal, websocket, "reviewer")
    except LookloopError as exc:
        await websocket.close(code=4401 if exc.status_code == 401 else 4403, reason=exc.message)
        return
    humans = _humans(system)
    humans.hub.bind(asyncio.get_running_loop())
    await websocket.accept()
    assert principal.account_id is not None
    queue = humans.hub.subscribe_reviewer(principal.account_id, principal.role)
    counts = await run_in_threadpool(humans.queue.counts)
    await websocket.send_json({"type": "hello", "role": principal.role, "name": principal.name, **counts})

    try:
        await relay(websocket, queue)
    finally:
        if humans.hub.unsubscribe_reviewer(principal.account_id, queue):
            # Off duty: their locks go back to the queue now rather than after the time-out.
            await run_in_threadpool(humans.queue.release_all, principal.account_id)


def _media_type(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"



_PAGES = Path(__file__).resolve().parent.parent / "pages"


def mount_review_page(app: FastAPI) -> None:
    """The reviewer page at /review (its script and style are served from /pages/)."""

    @app.get("/review", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(_PAGES / "review.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
