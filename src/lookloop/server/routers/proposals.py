"""Proposals: the catalogue grows from people's answers, one operator's approval at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from lookloop.imaging import sniff_image_type
from lookloop.server.auth import Principal
from lookloop.server.deps import get_system
from lookloop.server.policies import require
from lookloop.server.schemas.catalog import CatalogItemOut
from lookloop.server.schemas.errors import error_responses
from lookloop.server.schemas.proposals import ApproveIn, ApproveOut, ProposalOut, RejectIn, RejectOut
from lookloop.system import Lookloop

router = APIRouter(prefix="/v1/operators/proposals", tags=["operators"])
System = Annotated[Lookloop, Depends(get_system)]
Operator = Annotated[Principal, Depends(require("operator"))]
_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.get("", response_model=list[ProposalOut], responses=_ERRORS,
            summary="Names people answered that the catalogue lacks, most answered first")
def list_proposals(system: System, _: Operator) -> list[ProposalOut]:
    return [ProposalOut.of(p) for p in system.labels.proposals()]


@router.post("/approve", response_model=ApproveOut, status_code=201, responses=_ERRORS,
             summary="Add a proposed name to the catalogue: its answers teach the model the new item")
async def approve(system: System, _: Operator, body: ApproveIn) -> ApproveOut:
    done = await run_in_threadpool(system.labels.approve, body.name, price=body.price, currency=body.currency,
                                   coarse_class=body.coarse_class, description=body.description)
    return ApproveOut(item=CatalogItemOut.of(done.item), labels=done.labels, learnt=done.learnt)


@router.post("/reject", response_model=RejectOut, responses=_ERRORS,
             summary="Turn a proposed name down: its answers never become a class")
def reject(system: System, _: Operator, body: RejectIn) -> RejectOut:
    return RejectOut(name=body.name, rejected=system.labels.reject_proposal(body.name))


@router.get("/frames/{label_id}", response_class=Response, responses=_ERRORS,
            summary="The redacted frame a proposing answer was about")
def frame(system: System, _: Operator, label_id: str) -> Response:
    data = system.frame_bytes(system.labels.frame_sha(label_id))
    return Response(data, media_type=sniff_image_type(data) or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=300"})
