"""River-style conformance: every implementation of a family runs through the same checks.

A family's test module lists its implementations explicitly (name → factory), its checks (plain functions named
``check_*``) and a ``SKIP`` mapping ``{implementation: {check: reason}}`` for the checks that do not apply to an
implementation. Every (implementation, check) pair becomes one test; a declared skip shows up as a skipped test
with its reason. A skip that names an unknown implementation or check, or gives no reason, fails collection, so
the mapping cannot go stale silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

Skips = Mapping[str, Mapping[str, str]]


def check_name(check: Callable[..., Any]) -> str:
    return check.__name__.removeprefix("check_")


def cases(implementations: Sequence[str], checks: Sequence[Callable[..., Any]], skip: Skips) -> list[Any]:
    """One ``pytest.param(implementation, check)`` per pair, marked skipped where ``skip`` declares it."""
    names = [check_name(c) for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate check names: {names}")
    if len(set(implementations)) != len(implementations):
        raise ValueError(f"duplicate implementation names: {list(implementations)}")
    for impl, skipped in skip.items():
        if impl not in implementations:
            raise ValueError(f"SKIP names an unknown implementation {impl!r}")
        for name, reason in skipped.items():
            if name not in names:
                raise ValueError(f"SKIP[{impl!r}] names an unknown check {name!r}")
            if not reason.strip():
                raise ValueError(f"SKIP[{impl!r}][{name!r}] gives no reason")
    out = []
    for impl in implementations:
        for check, name in zip(checks, names, strict=True):
            why = skip.get(impl, {}).get(name)
            marks = [pytest.mark.skip(reason=f"declared: {why}")] if why else []
            out.append(pytest.param(impl, check, id=f"{impl}-{name}", marks=marks))
    return out
