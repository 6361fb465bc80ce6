"""What this server can do (backends, skills and their fallbacks), note sessions, and the wearer's memories."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from lookloop.humans.accounts import Principal
from lookloop.memory.store import NoteSession
from lookloop.server.auth import current_principal
from lookloop.server.deps import get_access, get_system
from lookloop.server.policies import Access
from lookloop.server.schemas.capabilities import (
    CapabilitiesOut,
    MemoryOut,
    NoteOut,
    NoteStartIn,
    NoteSummaryOut,
    NoteTextIn,
)
from lookloop.server.schemas.errors import error_responses
from lookloop.skills.registry import capabilities
from lookloop.system import Lookloop

router = APIRouter()
_ERRORS = error_responses(401, 403, 404, 422, 503)

System = Annotated[Lookloop, Depends(get_system)]
Policy = Annotated[Access, Depends(get_access)]
Caller = Annotated[Principal | None, Depends(current_principal)]


@router.get("/v1/capabilities", response_model=CapabilitiesOut, tags=["operators"],
            summary="Which model backends are configured and which skills fall back to humans")
def get_capabilities(system: System) -> CapabilitiesOut:
    return CapabilitiesOut.model_validate(capabilities(system.settings, list(system.skills())))


# -- notes ---------------------------------------------------------------------------------------------


def _note(system: Lookloop, access: Access, caller: Principal | None, note_id: str) -> NoteSession:
    return access.read_note(caller, system.notes.get(note_id))


@router.post("/v1/notes", response_model=NoteOut, status_code=201, tags=["notes"], responses=_ERRORS,
             summary="Start a note session (then append text and ask for the summary)")
def start_note(system: System, access: Policy, caller: Caller, body: NoteStartIn) -> NoteOut:
    device = access.ask_device(caller, body.device_id)
    return NoteOut.of(system.notes.start(device, body.title))


@router.post("/v1/notes/{note_id}/text", response_model=NoteOut, tags=["notes"], responses=_ERRORS,
             summary="Append the next piece of the conversation (typed, or from speech recognition)")
def append_note(system: System, access: Policy, caller: Caller, note_id: str, body: NoteTextIn) -> NoteOut:
    _note(system, access, caller, note_id)
    return NoteOut.of(system.notes.append(note_id, body.text))


@router.get("/v1/notes/{note_id}", response_model=NoteOut, tags=["notes"], responses=_ERRORS)
def get_note(system: System, access: Policy, caller: Caller, note_id: str) -> NoteOut:
    return NoteOut.of(_note(system, access, caller, note_id), with_text=True)


@router.post("/v1/notes/{note_id}/summary", response_model=NoteSummaryOut, tags=["notes"], responses=_ERRORS,
             summary="Summarise the session (an LLM's summary when a chat backend is configured); close=true ends it")
async def summarise_note(system: System, access: Policy, caller: Caller, note_id: str,
                         close: bool = False) -> NoteSummaryOut:
    await run_in_threadpool(_note, system, access, caller, note_id)
    note, summary = await run_in_threadpool(system.notes.summarise, note_id, close=close)
    return NoteSummaryOut.of(note, summary)


@router.delete("/v1/notes/{note_id}", status_code=204, tags=["notes"], responses=_ERRORS)
def delete_note(system: System, access: Policy, caller: Caller, note_id: str) -> None:
    _note(system, access, caller, note_id)
    system.notes.delete(note_id)


# -- memories ------------------------------------------------------------------------------------------


@router.get("/v1/memory", response_model=list[MemoryOut], tags=["memory"], responses=_ERRORS,
            summary="The calling device's remembered moments, newest first")
def list_memories(system: System, access: Policy, caller: Caller) -> list[MemoryOut]:
    return [MemoryOut.of(m) for m in system.memory.for_device(access.memory_device(caller))]


@router.delete("/v1/memory/{memory_id}", status_code=204, tags=["memory"], responses=_ERRORS)
def delete_memory(system: System, access: Policy, caller: Caller, memory_id: str) -> None:
    system.memory.delete(memory_id, device_id=access.memory_device(caller))
