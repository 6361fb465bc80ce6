"""Helpers of the browser tests under the pages' Content-Security-Policy (no 'unsafe-eval', nothing inline)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_js(page: Any, expression: str, timeout: float = 30_000) -> None:
    """Waits until ``expression`` is truthy in the page. Playwright's ``wait_for_function`` evaluates its predicate
    with ``eval`` inside the page, which the pages' CSP refuses; ``page.evaluate`` runs outside the CSP."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout / 1000:.0f} s: {expression}")
        page.wait_for_timeout(50)


def csp_violations(errors: list[str]) -> Callable[[Any], None]:
    """A console listener that records what the page's Content-Security-Policy refused (in ``errors``)."""

    def listen(message: Any) -> None:
        if "Content Security Policy" in message.text:
            errors.append(message.text)

    return listen
