"""The review queue for humans: claim, answer, skip, release; live items over a WebSocket; stats; gold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response

from lookloop.errors import LookloopError
from lookloop.humans.live import relay, token_verifier
from lookloop.imaging import sniff_image_type
from lookloop.server.auth import Principal, websocket_principal, websocket_token
from lookloop.server.deps import get_access, get_system
from lookloop.server.policies import Access, require
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.humans import (
    GoldIn,
    QueueCountsOut,
    ReviewAnswerIn,
    ReviewAnswerOut,
    ReviewerStatsOut,
    ReviewItemOut,
)
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/review", tags=["review"])
System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.post("/next", response_model=ReviewItemOut | None, responses=_ERRORS,
             summary="Claim the next item (live first); null when the queue is empty")
def next_item(system: System, reviewer: Reviewer) -> ReviewItemOut | None:
    item = system.humans.queue.next(reviewer)
    return ReviewItemOut.of(item) if item else None


@router.get("/queue", response_model=QueueCountsOut, responses=_ERRORS)
def queue_counts(system: System, _: Reviewer) -> QueueCountsOut:
    return QueueCountsOut(**system.humans.queue.counts())


@router.get("/items/{item_id}", response_model=ReviewItemOut, responses=_ERRORS,
            summary="An item you hold (offered to you or claimed)")
def get_item(access: Policy, item_id: str, reviewer: Reviewer) -> ReviewItemOut:
    return ReviewItemOut.of(access.review_item(reviewer, item_id))


@router.get("/items/{item_id}/frame", response_class=Response, responses=_ERRORS,
            summary="The redacted frame of an item you hold")
def item_frame(system: System, access: Policy, item_id: str, reviewer: Reviewer) -> Response:
    data = system.humans.queue.frame_bytes(access.review_item(reviewer, item_id))
    return Response(data, media_type=sniff_image_type(data) or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=300"})


@router.post("/items/{item_id}/claim", response_model=ReviewItemOut, responses=_ERRORS)
def claim(system: System, item_id: str, reviewer: Reviewer) -> ReviewItemOut:
    item = system.humans.queue.claim(item_id, reviewer)
    return ReviewItemOut.of(item)


@router.post("/items/{item_id}/answer", response_model=ReviewAnswerOut, responses=_ERRORS)
def answer(system: System, item_id: str, body: ReviewAnswerIn, reviewer: Reviewer) -> ReviewAnswerOut:
    done = system.humans.answer(item_id, reviewer, body.action, body.value)
    sub = done.submission
    return ReviewAnswerOut(item_id=item_id, resolved=sub.resolved, status=sub.status, value=sub.value,
                           label=done.label)


@router.post("/items/{item_id}/skip", status_code=204, responses=_ERRORS)
def skip(system: System, item_id: str, reviewer: Reviewer) -> Response:
    system.humans.skip(item_id, reviewer)
    return Response(status_code=204)


@router.post("/items/{item_id}/release", status_code=204, responses=_ERRORS)
def release(system: System, item_id: str, reviewer: Reviewer) -> Response:
    system.humans.queue.release(item_id, reviewer)
    return Response(status_code=204)


@router.get("/stats", response_model=list[ReviewerStatsOut], responses=_ERRORS,
            summary="Per-reviewer stats and trust (operators see everyone, reviewers themselves)")
def stats(system: System, access: Policy, principal: Reviewer) -> list[ReviewerStatsOut]:
    bar = system.settings.trust_min_gold_accuracy
    return [ReviewerStatsOut.of(r, bar) for r in system.humans.queue.stats(access.stats_scope(principal))]


@router.post("/gold", response_model=ReviewItemOut, status_code=201, responses=_ERRORS,
             summary="Make a settled ask a gold item (its known answer scores reviewers)")
def add_gold(system: System, body: GoldIn, _: Operator) -> ReviewItemOut:
    item = system.humans.queue.gold_from_ask(body.ask_id, body.answer)
    return ReviewItemOut.of(item)


@router.websocket("/stream")
async def review_stream(websocket: WebSocket, system: System) -> None:
    """On-duty reviewers: live escalations arrive as {"type": "item", "item": {...}} already locked to them.

    The session is re-checked on every message and twice a second: signing out, a disabled account or a new
    password closes the socket (code 4401, the reason) within a second and the reviewer's locks go back."""
    try:
        token = websocket_token(websocket)
        principal = Access.stream_role(await run_in_threadpool(websocket_principal, websocket), "reviewer")
    except LookloopError as exc:
        await websocket.close(code=4401 if exc.status_code == 401 else 4403, reason=exc.message)
        return
    humans = system.humans
    humans.hub.bind(asyncio.get_running_loop())
    await websocket.accept()
    assert principal.account_id is not None
    sub = humans.hub.subscribe_reviewer(principal.account_id, principal.role, token)
    counts = await run_in_threadpool(humans.queue.counts)
    await websocket.send_json({"type": "hello", "role": principal.role, "name": principal.name, **counts})

    try:
        await run_in_threadpool(humans.on_duty, principal.account_id)  # inside: whatever happens, they go off duty
        await relay(websocket, sub, token_verifier(humans.accounts, token))
    finally:
        if humans.hub.unsubscribe_reviewer(sub):
            # Off duty: their locks go back to the queue now rather than after the time-out.
            await run_in_threadpool(humans.queue.release_all, principal.account_id)


_PAGES = Path(__file__).resolve().parent.parent / "pages"


def mount_review_page(app: FastAPI) -> None:
    """The reviewer page at /review (its script and style are served from /pages/)."""

    @app.get("/review", include_in_schema=False)
    def review_page() -> FileResponse:
        return FileResponse(_PAGES / "review.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
