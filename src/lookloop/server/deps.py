"""Request dependencies shared by the routers: the running system, its access policy and its speech service."""

from __future__ import annotations

from anyio import CapacityLimiter
from fastapi.requests import HTTPConnection

from lookloop.server.policies import Access
from lookloop.speech import SpeechService
from lookloop.system import Lookloop


# Async: looked up on the event loop, with no thread per request (FastAPI runs a plain def dependency in one).
async def get_system(connection: HTTPConnection) -> Lookloop:
    system: Lookloop = connection.app.state.system
    return system


async def get_access(connection: HTTPConnection) -> Access:
    access: Access = connection.app.state.access
    return access


async def ask_threads(connection: HTTPConnection) -> CapacityLimiter:
    """The threads asks run on (``Settings.ask_threads``), apart from every other route's."""
    limiter: CapacityLimiter = connection.app.state.ask_threads
    return limiter


async def speech_service(connection: HTTPConnection) -> SpeechService:
    """The running system's speech service (no thread needed to look it up)."""
    system: Lookloop = connection.app.state.system
    return system.speech
