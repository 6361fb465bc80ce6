"""What this server can do (backends, skills and their fallbacks), note sessions, and the wearer's memories."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lookloop.errors import NotFound, Unauthorized
from lookloop.humans.accounts import Principal
from lookloop.memory.store import Memory, NoteSession
from lookloop.server.auth import ask_device_id, current_principal
from lookloop.server.deps import get_system
from lookloop.server.schemas import ErrorOut
from lookloop.skills.registry import capabilities
from lookloop.system import Lookloop

router = APIRouter()
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 422, 503)}

System = Annotated[Lookloop, Depends(get_system)]
Caller = Annotated[Principal | None, Depends(current_principal)]


class BackendOut(BaseModel):
    role: str
    configured: bool
    kind: str
    model: str
    detail: str


class SkillOut(BaseModel):
    name: str
    available: bool
    fallback: str | None = Field(description="what answers when the skill's backend is missing: human, extractive…")
    detail: str


class CapabilitiesOut(BaseModel):
    backends: list[BackendOut]
    skills: list[SkillOut]


@router.get("/v1/capabilities", response_model=CapabilitiesOut, tags=["operators"],
            summary="Which model backends are configured and which skills fall back to humans")
def get_capabilities(system: System) -> CapabilitiesOut:
    return CapabilitiesOut.model_validate(capabilities(system.settings, list(system.skills())))


# -- notes ---------------------------------------------------------------------------------------------


class NoteStartIn(BaseModel):
    title: str = Field(default="", max_length=200)
    device_id: str | None = Field(default=None, max_length=64, description="operators only; devices note as themselves")


class NoteTextIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000, description="the next piece of the conversation")


class NoteOut(BaseModel):
    id: str
    device_id: str
    title: str
    created_at: dt.datetime
    updated_at: dt.datetime
    closed: bool
    chars: int
    text: str | None = None
    summary: str | None = None
    summary_method: str = ""

    @classmethod
    def of(cls, note: NoteSession, *, with_text: bool = False) -> NoteOut:
        return cls(
            id=note.id,
            device_id=note.device_id,
            title=note.title,
            created_at=note.created_at,
            updated_at=note.updated_at,
            closed=note.closed_at is not None,
            chars=len(note.text),
            text=note.text if with_text else None,
            summary=note.summary,
            summary_method=note.summary_method,
        )


def _check_note_access(system: Lookloop, caller: Principal | None, note: NoteSession) -> None:
    """Anonymous notes: whoever holds the 128-bit id. A wearer's notes: their devices and operators only."""
    if note.device_id == "anonymous":
        return
    if caller is not None:
        if caller.allows("operator") or caller.device_id == note.device_id:
            return
        if caller.wearer_id:

            if note.device_id in system.humans.accounts.devices_of_wearer(caller.wearer_id):
                return
    raise NotFound(f"no note session {note.id!r}")


@router.post("/v1/notes", response_model=NoteOut, status_code=201, tags=["notes"], responses=_ERRORS,
             summary="Start a note session (then append text and ask for the summary)")
def start_note(system: System, caller: Caller, body: NoteStartIn) -> NoteOut:
    device = ask_device_id(system, caller, body.device_id)
    return NoteOut.of(system.notes.start(device, body.title))


def _note(system: Lookloop, caller: Principal | None, note_id: str) -> NoteSession:
    note = system.notes.get(note_id)
    _check_note_access(system, caller, note)
    return note


@router.post("/v1/notes/{note_id}/text", response_model=NoteOut, tags=["notes"], responses=_ERRORS,
             summary="Append the next piece of the conversation (typed, or from speech recognition)")
def append_note(system: System, caller: Caller, note_id: str, body: NoteTextIn) -> NoteOut:
    _note(system, caller, note_id)
    return NoteOut.of(system.notes.append(note_id, body.text))


@router.get("/v1/notes/{note_id}", response_model=NoteOut, tags=["notes"], responses=_ERRORS)
def get_note(system: System, caller: Caller, note_id: str) -> NoteOut:
    return NoteOut.of(_note(system, caller, note_id), with_text=True)


class SummaryOut(BaseModel):
    note_id: str
    summary: str
    method: str
    closed: bool


@router.post("/v1/notes/{note_id}/summary", response_model=SummaryOut, tags=["notes"], responses=_ERRORS,
             summary="Summarise the session (an LLM's summary when a chat backend is configured); close=true ends it")
async def summarise_note(system: System, caller: Caller, note_id: str, close: bool = False) -> SummaryOut:
    await run_in_threadpool(_note, system, caller, note_id)
    note, summary = await run_in_threadpool(system.notes.summarise, note_id, close=close)
    return SummaryOut(note_id=note.id, summary=summary.text, method=summary.method, closed=note.closed_at is not None)


@router.delete("/v1/notes/{note_id}", status_code=204, tags=["notes"], responses=_ERRORS)
def delete_note(system: System, caller: Caller, note_id: str) -> None:
    _note(system, caller, note_id)
    system.notes.store.delete(note_id)


# -- memories ------------------------------------------------------------------------------------------


class MemoryOut(BaseModel):
    id: str
    created_at: dt.datetime
    note: str
    description: str
    frame_sha: str | None

    @classmethod
    def of(cls, m: Memory) -> MemoryOut:
        return cls(id=m.id, created_at=m.created_at, note=m.note, description=m.description, frame_sha=m.frame_sha)


def _device(caller: Principal | None) -> str:
    if caller is None or caller.kind != "device" or not caller.device_id:
        raise Unauthorized("memories belong to a device: send 'Authorization: Bearer dev_…'")
    return caller.device_id


@router.get("/v1/memory", response_model=list[MemoryOut], tags=["memory"], responses=_ERRORS,
            summary="The calling device's remembered moments, newest first")
def list_memories(system: System, caller: Caller) -> list[MemoryOut]:
    return [MemoryOut.of(m) for m in system.memory.for_device(_device(caller))]


@router.delete("/v1/memory/{memory_id}", status_code=204, tags=["memory"], responses=_ERRORS)
def delete_memory(system: System, caller: Caller, memory_id: str) -> None:
    system.memory.delete(memory_id, device_id=_device(caller))
