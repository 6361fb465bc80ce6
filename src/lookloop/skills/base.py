"""The skill protocol: every skill takes an ask and returns an answer with a confidence."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from lookloop.domain import Answer, Ask


@runtime_checkable
class Skill(Protocol):
    """One capability of the glasses.

    ``calibrated`` skills give confidences that an escalation policy may threshold; the others answer as they
    are (or escalate on their own by returning ``Decision.ESCALATE``).
    """

    name: str
    needs_frame: bool
    calibrated: bool

    def run(self, ask: Ask) -> Answer: ...


class HandToHuman:
    """Out-of-scope asks: no skill fits, so a person answers rather than a wrong skill guessing."""

    name = "human"
    needs_frame = False
    calibrated = False

    def run(self, ask: Ask) -> Answer:
        from lookloop.domain import Decision

        return Answer(
            text="I can't answer that myself — asking a helper.",
            skill=self.name,
            confidence=0.0,
            decision=Decision.ESCALATE,
            model_version="router",
            result={"reason": "out_of_scope"},
        )
