"""Wearers' asks: thin handlers that load, check and hand over to the service."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response

from lookloop.domain import display
from lookloop.errors import NotFound, TooLarge
from lookloop.server.auth import Principal, current_principal
from lookloop.server.deps import ask_threads, get_access, get_system
from lookloop.server.edge import FORM_ALLOWANCE, upload_cap
from lookloop.server.policies import Access, idempotency_key, require
from lookloop.server.schemas.asks import AskOut, LabelIn, LabelOut, RouteIn, RouteOut, WaitOut
from lookloop.server.schemas.errors import error_responses
from lookloop.store import idempotency
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/asks", tags=["asks"])
_ERRORS = error_responses(400, 404, 413, 415, 422)

System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
Caller = Annotated[Principal | None, Depends(current_principal)]
RetryKey = Annotated[idempotency.Key | None, Depends(idempotency_key)]


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the image is over the limit of {limit} bytes")
    return data


@router.post("", response_model=AskOut, responses=_ERRORS, summary="Ask about what the wearer sees")
@upload_cap(lambda s: s.max_image_bytes + FORM_ALLOWANCE)
async def create_ask(
    system: System,
    access: Policy,
    caller: Caller,
    background: BackgroundTasks,
    threads: Annotated[CapacityLimiter, Depends(ask_threads)],
    question: Annotated[str, Form(description="What the wearer asked, e.g. 'what is this?'")],
    image: Annotated[UploadFile | None, File(description="The camera frame (JPEG, PNG, WebP)")] = None,
    device_id: Annotated[str, Form(max_length=64)] = "anonymous",
    skill: Annotated[str | None, Form(max_length=32)] = None,
    retry_key: RetryKey = None,
) -> AskOut:
    device_id = access.ask_device(caller, device_id)
    data = await _read_limited(image, system.settings.max_image_bytes) if image is not None else None
    # The queue, the live hub and the rest hear of the ask once the answer has gone back.
    record = await to_thread.run_sync(
        partial(system.ask, question, data, device_id=device_id, idempotency_key=retry_key, skill=skill,
                after=background.add_task),
        limiter=threads,
    )
    return AskOut.of(record)


@router.get("", response_model=list[AskOut])
def list_asks(
    system: System,
    access: Policy,
    caller: Annotated[Principal, Depends(require("wearer", "operator"))],
    device_id: str | None = None,
    outcome: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[AskOut]:
    device_id = access.listed_device(caller, device_id)
    return [AskOut.of(r) for r in system.list_asks(device_id=device_id, outcome=outcome, limit=limit)]


@router.get("/{ask_id}", response_model=AskOut, responses=_ERRORS)
def get_ask(system: System, access: Policy, caller: Caller, ask_id: str) -> AskOut:
    return AskOut.of(access.read_ask(caller, system.get_ask(ask_id)))


@router.get("/{ask_id}/frame", responses=_ERRORS, response_class=Response)
def get_frame(system: System, access: Policy, caller: Caller, ask_id: str) -> Response:
    record = access.read_ask(caller, system.get_ask(ask_id))
    if record.frame_sha is None:
        raise NotFound("this ask has no frame")
    return Response(system.frame_bytes(record.frame_sha), media_type="image/jpeg")


@router.post("/{ask_id}/cancel", response_model=WaitOut, responses=error_responses(401, 403, 404, 409),
             summary="Stop waiting for a helper: the ask leaves the review queue")
def cancel_ask(system: System, access: Policy, caller: Caller, ask_id: str) -> WaitOut:
    access.own_waiting_ask(caller, system.get_ask(ask_id))
    return WaitOut.of(system.humans.cancel(ask_id))


@router.post("/{ask_id}/keep-waiting", response_model=WaitOut, responses=error_responses(401, 403, 404, 409),
             summary="Keep waiting after no helper answered in time: the ask is offered to helpers again")
def keep_waiting(system: System, access: Policy, caller: Caller, ask_id: str) -> WaitOut:
    access.own_waiting_ask(caller, system.get_ask(ask_id))
    return WaitOut.of(system.humans.keep_waiting(ask_id))


@router.post("/{ask_id}/labels", response_model=AskOut, responses=_ERRORS, summary="Give the right answer")
def label_ask(
    system: System, access: Policy, caller: Caller, ask_id: str, body: LabelIn, retry_key: RetryKey = None,
) -> AskOut:
    requested = None if body.source == "human" else body.source
    source = access.label_source(caller, system.get_ask(ask_id), requested)
    return AskOut.of(system.add_label(
        ask_id, body.value, source=source, author=caller.author if caller else "", idempotency_key=retry_key,
    ))


@router.get("/{ask_id}/labels", response_model=list[LabelOut], responses=error_responses(401, 404),
            summary="An ask's labels with their provenance (source, author, trust, status)")
def list_labels(system: System, access: Policy, caller: Caller, ask_id: str) -> list[LabelOut]:
    access.read_ask(caller, system.get_ask(ask_id))
    return [LabelOut(id=x.id, ask_id=x.ask_id, value=x.value, display=display(x.value), source=x.source,
                     author=access.label_author(caller, x.author, x.source) if caller else "",
                     trust=x.trust, status=x.status, created_at=x.created_at)
            for x in system.labels.of_ask(ask_id)]


@router.post(
    "/{ask_id}/route", response_model=RouteOut, responses=_ERRORS, summary="Correct the skill an ask was routed to"
)
def correct_route(system: System, access: Policy, caller: Caller, ask_id: str, body: RouteIn) -> RouteOut:
    record = access.correct_route(caller, system.get_ask(ask_id))
    system.correct_route(record.question, body.skill)
    return RouteOut(question=record.question, skill=system.route(record.question, record.frame_sha is not None))
