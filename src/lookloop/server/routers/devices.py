"""Wearers' devices: the live answer stream (WebSocket or SSE) and feedback on answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from lookloop.errors import LookloopError
from lookloop.humans.live import relay
from lookloop.server.auth import Principal, current_principal, websocket_principal
from lookloop.server.deps import get_access, get_system
from lookloop.server.policies import Access, idempotency_key, require
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.humans import FeedbackIn, FeedbackOut
from lookloop.store import idempotency
from lookloop.system import Lookloop

router = APIRouter(tags=["devices"])
System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
_ERRORS = error_responses(401, 403, 404, 422)
KEEPALIVE_S = 15.0


@router.websocket("/v1/devices/stream")
async def device_stream(websocket: WebSocket, system: System, access: Policy) -> None:
    """The wearer's stream: {"type": "answer", …} when a human answers, {"type": "status", …} meanwhile."""
    try:
        principal = Access.stream_role(await run_in_threadpool(websocket_principal, websocket), "wearer")
        device_id = access.stream_device(principal)
    except LookloopError as exc:
        await websocket.close(code=4401 if exc.status_code == 401 else 4403, reason=exc.message)
        return
    hub = system.humans.hub
    hub.bind(asyncio.get_running_loop())
    await websocket.accept()
    queue = hub.subscribe_wearer(device_id)
    await websocket.send_json({"type": "hello", "device_id": device_id})

    try:
        await relay(websocket, queue)
    finally:
        hub.unsubscribe_wearer(device_id, queue)


@router.get("/v1/devices/stream/sse", responses=_ERRORS, response_class=StreamingResponse,
            summary="The wearer's stream as server-sent events (Authorization: Bearer dev_…)")
async def device_stream_sse(request: Request, system: System, access: Policy,
                            principal: Annotated[Principal, Depends(require("wearer"))]) -> StreamingResponse:
    device_id = access.stream_device(principal)
    hub = system.humans.hub
    hub.bind(asyncio.get_running_loop())
    queue = hub.subscribe_wearer(device_id)

    async def events() -> AsyncIterator[str]:
        try:
            yield f"data: {json.dumps({'type': 'hello', 'device_id': device_id})}\n\n"
            while not await request.is_disconnected():
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"data: {json.dumps(event)}\n\n"
        finally:
            hub.unsubscribe_wearer(device_id, queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/asks/{ask_id}/feedback", response_model=FeedbackOut, status_code=201, responses=_ERRORS,
             tags=["asks"], summary="The wearer says whether an answer was right (with an optional correction)")
def give_feedback(system: System, access: Policy, ask_id: str, body: FeedbackIn,
                  principal: Annotated[Principal | None, Depends(current_principal)],
                  retry_key: Annotated[idempotency.Key | None, Depends(idempotency_key)] = None) -> FeedbackOut:
    device_id = access.feedback_device(principal, system.get_ask(ask_id))
    info = system.humans.feedback.give(
        ask_id, body.verdict, device_id=device_id, correction=body.correction, idempotency_key=retry_key
    )
    return FeedbackOut.of(info)
