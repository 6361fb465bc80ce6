"""How far a reviewer is trusted: by their measured accuracy on gold items (known answers mixed into the queue)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, func, select

from lookloop.config import Settings
from lookloop.humans.tables import AccountRow, ReviewAnswerRow
from lookloop.loop.labels import UNTRUSTED, Trust
from lookloop.store.db import Database


@dataclass(frozen=True)
class Standing:
    """Where a reviewer stands: ``trusted`` when their label teaches the shared model on its own; ``gold_to_go``
    the gold answers (all right) they still need for that (0 when trusted; None when no number of right answers
    reaches the accuracy bar any more, a bar of 100% once missed)."""

    trusted: bool
    gold_answered: int
    gold_right: int
    gold_to_go: int | None
    operator: bool = False

    @property
    def gold_accuracy(self) -> float | None:
        return round(self.gold_right / self.gold_answered, 4) if self.gold_answered else None


def standing(answered: int, right: int, settings: Settings, *, operator: bool = False) -> Standing:
    """The standing of a reviewer who answered ``answered`` gold items, ``right`` of them right."""
    if operator:
        return Standing(True, answered, right, 0, operator=True)
    to_go = gold_to_go(answered, right, settings)
    return Standing(to_go == 0, answered, right, to_go)


def gold_to_go(answered: int, right: int, settings: Settings) -> int | None:
    """Right gold answers still needed to reach both ``trust_min_gold_answers`` and ``trust_min_gold_accuracy``
    (with no gold needed, ``trust_min_gold_answers`` 0, a reviewer is trusted until gold answers say otherwise)."""
    bar = settings.trust_min_gold_accuracy

    def accurate(n: int) -> bool:
        total = answered + n
        return total == 0 or (right + n) / total >= bar

    more = 0
    if not accurate(0):
        if bar >= 1.0:
            return None
        more = max(0, int((bar * answered - right) / (1.0 - bar)) - 1)  # the estimate, then the exact count
        while not accurate(more):
            more += 1
    return max(more, settings.trust_min_gold_answers - answered, 0)


class ReviewerTrust:
    """A reviewer's label teaches the shared model on its own once they answered enough gold items
    (``trust_min_gold_answers``) well enough (``trust_min_gold_accuracy``); operators are trusted. Anyone else
    (a name that is no account, a disabled account) is not."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def trust_of(self, author: str) -> Trust:
        """The trust of the reviewer named ``author`` (their username), measured now."""
        if not author:
            return UNTRUSTED
        with self.db.session() as s:
            account = s.execute(select(AccountRow.id, AccountRow.role, AccountRow.disabled)
                                .where(AccountRow.username == author)).first()
        if account is None or account.disabled:
            return UNTRUSTED
        if account.role == "operator":
            return Trust(1.0, True, operator=True)
        now = self.standing(account.id)
        return Trust(now.gold_accuracy or 0.0, now.trusted)

    def standing(self, account_id: str) -> Standing:
        """Where the reviewer with ``account_id`` stands now (an operator is trusted)."""
        a = ReviewAnswerRow
        with self.db.session() as s:
            role = s.scalar(select(AccountRow.role).where(AccountRow.id == account_id))
            answered, right = s.execute(select(
                func.count(), func.sum(case((a.correct.is_(True), 1), else_=0)))
                .where(and_(a.account_id == account_id, a.gold.is_(True), a.action != "skip"))).one()
        return standing(int(answered or 0), int(right or 0), self.settings, operator=role == "operator")
