"""The conformance harness itself: declared skips are shown with their reason and cannot go stale."""

from __future__ import annotations

import pytest
from conformance_util import cases


def check_one(x: object) -> None: ...


def check_two(x: object) -> None: ...


def test_every_pair_is_a_case_and_declared_skips_carry_their_reason() -> None:
    params = cases(["a", "b"], [check_one, check_two], {"b": {"two": "does not apply to b"}})
    assert [p.id for p in params] == ["a-one", "a-two", "b-one", "b-two"]
    skipped = {p.id: [m.kwargs["reason"] for m in p.marks] for p in params if p.marks}
    assert skipped == {"b-two": ["declared: does not apply to b"]}


@pytest.mark.parametrize(
    "skip",
    [{"c": {"one": "no such implementation"}}, {"a": {"three": "no such check"}}, {"a": {"one": "  "}}],
)
def test_a_stale_or_unexplained_skip_fails(skip: dict[str, dict[str, str]]) -> None:
    with pytest.raises(ValueError):
        cases(["a", "b"], [check_one, check_two], skip)
