"""Errors the domain raises; the HTTP layer and the CLI turn them into 4xx responses and one-line messages."""

from __future__ import annotations

import math


class LookloopError(Exception):
    """Base class: carries the HTTP status a handler should answer with."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(LookloopError):
    status_code = 422


class UnsupportedMedia(BadInput):
    status_code = 415


class TooLarge(BadInput):
    status_code = 413


class NotFound(LookloopError):
    status_code = 404


class Unauthorized(LookloopError):
    status_code = 401


class Forbidden(LookloopError):
    status_code = 403


class Conflict(LookloopError):
    status_code = 409


class TooManyRequests(LookloopError):
    """Slow down: ``retry_after`` seconds until another try may succeed (sent as ``Retry-After``)."""

    status_code = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class NotConfigured(LookloopError):
    """A pluggable backend (LLM, VLM, translation) that the operator has not set up."""

    status_code = 503
