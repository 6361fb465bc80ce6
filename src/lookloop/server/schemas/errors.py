"""The error body every endpoint answers with, and the ``responses=`` table the routers declare it in."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorOut(BaseModel):
    detail: str


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status code answers with an ``ErrorOut``."""
    return {code: {"model": ErrorOut} for code in codes}
