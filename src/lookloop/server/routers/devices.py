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
from lookloop.humans.live import CHECK_EVERY_S, guarded, relay, token_verifier
from lookloop.server.auth import Principal, bearer_token, current_principal, websocket_principal, websocket_token
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
    """The wearer's stream: {"type": "answer", …} when a human answers, {"type": "status", …} meanwhile.

    The device token is re-checked on every message and twice a second: revoking the device closes the socket
    (code 4401, the reason) within a second."""
    try:
        token = websocket_token(websocket)
        principal = Access.stream_role(await run_in_threadpool(websocket_principal, websocket), "wearer")
        device_id = access.stream_device(principal)
    except LookloopError as exc:
        await websocket.close(code=4401 if exc.status_code == 401 else 4403, reason=exc.message)
        return
    hub = system.humans.hub
    hub.bind(asyncio.get_running_loop())
    await websocket.accept()
    sub = hub.subscribe_wearer(device_id, token)
    await websocket.send_json({"type": "hello", "device_id": device_id})

    try:
        await relay(websocket, sub, token_verifier(system.humans.accounts, token))
    finally:
        hub.unsubscribe_wearer(sub)


@router.get("/v1/devices/stream/sse", responses=_ERRORS, response_class=StreamingResponse,
            summary="The wearer's stream as server-sent events (Authorization: Bearer dev_…)")
async def device_stream_sse(request: Request, system: System, access: Policy,
                            principal: Annotated[Principal, Depends(require("wearer"))]) -> StreamingResponse:
    """Ends with {"type": "closed", "reason": …} within a second of the device's token being revoked."""
    device_id = access.stream_device(principal)
    token = bearer_token(request)
    assert token is not None  # require() admitted a caller, so a token came
    hub = system.humans.hub
    hub.bind(asyncio.get_running_loop())
    sub = hub.subscribe_wearer(device_id, token)
    verify = token_verifier(system.humans.accounts, token)

    async def events() -> AsyncIterator[str]:
        try:
            yield f"data: {json.dumps({'type': 'hello', 'device_id': device_id})}\n\n"
            quiet = 0.0
            async for event in guarded(sub, verify):
                if await request.is_disconnected():
                    return
                if event is None:
                    quiet += CHECK_EVERY_S
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"
                    continue
                quiet = 0.0
                yield f"data: {json.dumps(event)}\n\n"
            yield f"data: {json.dumps({'type': 'closed', 'reason': sub.reason})}\n\n"
        finally:
            hub.unsubscribe_wearer(sub)

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
