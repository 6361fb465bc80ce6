"""Privacy endpoints: the wearer's consent and delete-my-data, the audit log, reveal and purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from lookloop.errors import NotFound
from lookloop.humans.accounts import Principal
from lookloop.imaging import sniff_image_type
from lookloop.privacy import audit
from lookloop.server.deps import get_access, get_system
from lookloop.server.policies import Access, require
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.privacy import AuditOut, ConsentIn, ConsentOut, DeletionOut, PurgeOut, RedactionOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1", tags=["privacy"])
System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
Wearer = Annotated[Principal, Depends(require("wearer"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS = error_responses(401, 403, 404, 422)


@router.get("/me/consent", response_model=ConsentOut, responses=_ERRORS, summary="The wearer's privacy choices")
def get_consent(system: System, access: Policy, principal: Wearer) -> ConsentOut:
    return ConsentOut.of(system.consent.for_wearer(access.wearer(principal)))


@router.put("/me/consent", response_model=ConsentOut, responses=_ERRORS, summary="Change privacy choices")
def put_consent(system: System, access: Policy, principal: Wearer, body: ConsentIn) -> ConsentOut:
    wearer = access.wearer(principal)
    consent = system.consent.set(wearer, **body.model_dump())
    actor, role = audit.actor_of(principal)
    audit.record(system.db, actor=actor, role=role, action="privacy.consent", target=f"wearer:{wearer}",
                 **consent.as_dict())
    return ConsentOut.of(consent)


@router.delete("/me/data", response_model=DeletionOut, responses=_ERRORS, summary="Delete my data")
async def delete_my_data(system: System, access: Policy, principal: Wearer) -> DeletionOut:
    actor, role = audit.actor_of(principal)
    report = await run_in_threadpool(
        system.deletion.delete_wearer_data, access.wearer(principal), actor=actor, role=role
    )
    return DeletionOut.of(report)


@router.delete(
    "/privacy/wearers/{wearer_id}/data", response_model=DeletionOut, responses=_ERRORS,
    summary="Delete a wearer's data (operators; audited)",
)
async def delete_wearer(system: System, access: Policy, principal: Operator, wearer_id: str) -> DeletionOut:
    wearer = access.deletable_wearer(wearer_id)
    actor, role = audit.actor_of(principal)
    report = await run_in_threadpool(system.deletion.delete_wearer_data, wearer, actor=actor, role=role)
    return DeletionOut.of(report)


@router.get("/privacy/audit", response_model=list[AuditOut], responses=_ERRORS, summary="The audit log")
def audit_log(
    system: System,
    principal: Operator,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    return [AuditOut.of(e) for e in audit.entries(system.db, action=action, limit=limit)]


@router.get(
    "/privacy/asks/{ask_id}/redactions", response_model=RedactionOut, responses=_ERRORS,
    summary="What was redacted in an ask's frame, and by which model",
)
def redactions(system: System, access: Policy, principal: Reviewer, ask_id: str) -> RedactionOut:
    record = access.queued_ask(principal, system.get_ask(ask_id))
    info = system.privacy.info(record.frame_sha) if record.frame_sha else None
    if info is None:
        raise NotFound("this ask has no stored frame")
    return RedactionOut.of(ask_id, info)


@router.get(
    "/privacy/asks/{ask_id}/original", responses={**_ERRORS, 200: {"content": {"image/*": {}}}},
    response_class=Response, summary="Reveal the unredacted frame (permission needed; audited)",
)
def reveal(system: System, access: Policy, principal: Reviewer, ask_id: str) -> Response:
    access.reveal(principal, ask_id)
    record = access.queued_ask(principal, system.get_ask(ask_id))
    if not record.frame_sha:
        raise NotFound("this ask has no frame")
    data = system.privacy.reveal(record.frame_sha)
    # Written before the bytes leave: a reveal is never unaudited.
    actor, role = audit.actor_of(principal)
    audit.record(system.db, actor=actor, role=role, action="privacy.reveal", target=f"ask:{ask_id}",
                 frame=record.frame_sha)
    return Response(data, media_type=sniff_image_type(data) or "application/octet-stream",
                    headers={"Cache-Control": "no-store"})


@router.post("/privacy/purge", response_model=PurgeOut, responses=_ERRORS, summary="Purge expired frames now")
def purge(system: System, principal: Operator) -> PurgeOut:
    report = system.privacy.purge()
    actor, role = audit.actor_of(principal)
    audit.record(system.db, actor=actor, role=role, action="privacy.purge", target="frames",
                 originals=report.originals, transient_frames=report.transient_frames)
    return PurgeOut.of(report)
