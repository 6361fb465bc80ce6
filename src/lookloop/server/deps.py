"""Request dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from lookloop.system import Lookloop


def get_system(request: Request) -> Lookloop:
    system: Lookloop = request.app.state.system
    return system
