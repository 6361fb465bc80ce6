"""Privacy endpoints: the wearer's consent and delete-my-data, the audit log, reveal and purge."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from lookloop.errors import BadInput, Forbidden, NotFound
from lookloop.humans.accounts import Principal
from lookloop.imaging import sniff_image_type
from lookloop.privacy import audit
from lookloop.privacy.tables import RevealGrantRow
from lookloop.server.auth import require
from lookloop.server.deps import get_system
from lookloop.server.schemas import ErrorOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1", tags=["privacy"])
System = Annotated[Lookloop, Depends(get_system)]
Wearer = Annotated[Principal, Depends(require("wearer"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422)}


class ConsentOut(BaseModel):
    store_frames: bool = Field(description="Keep the redacted frame with the episode.")
    keep_originals: bool = Field(description="Keep the unredacted frame, encrypted, for the retention period.")
    human_review: bool = Field(description="Unsure answers may go to human helpers.")
    training_use: bool = Field(description="Labelled episodes may teach the model and appear in exports.")
    memory: bool = Field(description="The assistant may remember things for the wearer.")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store_frames: bool | None = None
    keep_originals: bool | None = None
    human_review: bool | None = None
    training_use: bool | None = None
    memory: bool | None = None


class DeletionOut(BaseModel):
    wearer_id: str
    asks: int
    labels: int
    frames: int
    embeddings: int
    memory_entries: int
    models_marked: list[str]


class AuditOut(BaseModel):
    id: str
    at: dt.datetime
    actor: str
    role: str
    action: str
    target: str
    detail: dict[str, Any]


class RedactionOut(BaseModel):
    ask_id: str
    stage: str = Field(description="'sealed' (redaction pending; the upload is kept encrypted) or 'full'.")
    regions: list[dict[str, Any]]
    model_version: str
    original_kept: bool
    original_expires_at: dt.datetime | None


class PurgeOut(BaseModel):
    originals: int
    transient_frames: int


def _wearer_id(principal: Principal) -> str:
    if not principal.wearer_id:
        raise Forbidden("this device belongs to no wearer")
    return principal.wearer_id


def _deletion_out(report: Any) -> DeletionOut:
    return DeletionOut(**{k: v for k, v in report.as_dict().items() if k in DeletionOut.model_fields})


@router.get("/me/consent", response_model=ConsentOut, responses=_ERRORS, summary="The wearer's privacy choices")
def get_consent(system: System, principal: Wearer) -> ConsentOut:
    return ConsentOut(**system.consent.for_wearer(_wearer_id(principal)).as_dict())


@router.put("/me/consent", response_model=ConsentOut, responses=_ERRORS, summary="Change privacy choices")
def put_consent(system: System, principal: Wearer, body: ConsentIn) -> ConsentOut:
    wearer = _wearer_id(principal)
    consent = system.consent.set(wearer, **body.model_dump())
    actor, role = audit.actor_of(principal)
    audit.record(system.db, actor=actor, role=role, action="privacy.consent", target=f"wearer:{wearer}",
                 **consent.as_dict())
    return ConsentOut(**consent.as_dict())


@router.delete("/me/data", response_model=DeletionOut, responses=_ERRORS, summary="Delete my data")
async def delete_my_data(system: System, principal: Wearer) -> DeletionOut:
    actor, role = audit.actor_of(principal)
    report = await run_in_threadpool(system.deletion.delete_wearer_data, _wearer_id(principal), actor=actor, role=role)
    return _deletion_out(report)


@router.delete(
    "/privacy/wearers/{wearer_id}/data", response_model=DeletionOut, responses=_ERRORS,
    summary="Delete a wearer's data (operators; audited)",
)
async def delete_wearer(system: System, principal: Operator, wearer_id: str) -> DeletionOut:
    if wearer_id == "anonymous":
        raise BadInput("anonymous asks belong to nobody")
    actor, role = audit.actor_of(principal)
    report = await run_in_threadpool(system.deletion.delete_wearer_data, wearer_id, actor=actor, role=role)
    return _deletion_out(report)


@router.get("/privacy/audit", response_model=list[AuditOut], responses=_ERRORS, summary="The audit log")
def audit_log(
    system: System,
    principal: Operator,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditOut]:
    return [AuditOut(**e.__dict__) for e in audit.entries(system.db, action=action, limit=limit)]


@router.get(
    "/privacy/asks/{ask_id}/redactions", response_model=RedactionOut, responses=_ERRORS,
    summary="What was redacted in an ask's frame, and by which model",
)
def redactions(system: System, principal: Reviewer, ask_id: str) -> RedactionOut:
    record = _queued_for(principal, system.get_ask(ask_id))
    info = system.privacy.info(record.frame_sha) if record.frame_sha else None
    if info is None:
        raise NotFound("this ask has no stored frame")
    return RedactionOut(ask_id=ask_id, stage=info.stage, regions=info.regions, model_version=info.model_version,
                        original_kept=info.original_kept, original_expires_at=info.original_expires_at)


def _queued_for(principal: Principal, record: Any) -> Any:
    """Reviewers see only asks waiting in the queue; operators see any."""
    if principal.role != "operator" and record.outcome != "escalated":
        raise NotFound("no such ask in the review queue")
    return record


def may_reveal(system: Lookloop, principal: Principal) -> bool:
    """Operators, and accounts an operator granted the reveal permission (``lookloop privacy grant``)."""
    if principal.role == "operator":
        return True
    if principal.kind != "account" or not principal.account_id:
        return False
    with system.db.session() as s:
        return s.get(RevealGrantRow, principal.account_id) is not None


@router.get(
    "/privacy/asks/{ask_id}/original", responses={**_ERRORS, 200: {"content": {"image/*": {}}}},
    response_class=Response, summary="Reveal the unredacted frame (permission needed; audited)",
)
def reveal(system: System, principal: Reviewer, ask_id: str) -> Response:
    actor, role = audit.actor_of(principal)
    if not may_reveal(system, principal):
        audit.record(system.db, actor=actor, role=role, action="privacy.reveal_denied", target=f"ask:{ask_id}")
        raise Forbidden("revealing an unredacted frame needs the reveal permission")
    record = _queued_for(principal, system.get_ask(ask_id))
    if not record.frame_sha:
        raise NotFound("this ask has no frame")
    data = system.privacy.reveal(record.frame_sha)
    # Written before the bytes leave: a reveal is never unaudited.
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
    return PurgeOut(originals=report.originals, transient_frames=report.transient_frames)
