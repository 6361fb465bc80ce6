"""How far a reviewer is trusted: by their measured accuracy on gold items (known answers mixed into the queue)."""

from __future__ import annotations

from sqlalchemy import and_, case, func, select

from lookloop.config import Settings
from lookloop.humans.tables import AccountRow, ReviewAnswerRow
from lookloop.loop.labels import UNTRUSTED, Trust
from lookloop.store.db import Database


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
        a = ReviewAnswerRow
        with self.db.session() as s:
            account = s.execute(select(AccountRow.id, AccountRow.role, AccountRow.disabled)
                                .where(AccountRow.username == author)).first()
            if account is None or account.disabled:
                return UNTRUSTED
            if account.role == "operator":
                return Trust(1.0, True, operator=True)
            answered, right = s.execute(select(
                func.count(), func.sum(case((a.correct.is_(True), 1), else_=0)))
                .where(and_(a.account_id == account.id, a.gold.is_(True), a.action != "skip"))).one()
        answered, right = int(answered or 0), int(right or 0)
        accuracy = right / answered if answered else 0.0
        # No gold needed (``trust_min_gold_answers`` 0): trusted until gold answers say otherwise.
        trusted = (answered >= self.settings.trust_min_gold_answers
                   and (answered == 0 or accuracy >= self.settings.trust_min_gold_accuracy))
        return Trust(round(accuracy, 4), trusted)
