"""Consent per wearer, and the one place every other part asks whether something is allowed.

Defaults (a wearer who never changed anything):

* ``store_frames`` True: the *redacted* frame is kept with the episode (review, learning, history).
  False: a frame is kept (redacted) only while a human still has to answer it, then deleted.
* ``keep_originals`` False: the unredacted frame is never kept. True: it is kept encrypted at rest for
  ``Settings.original_retention_days``, then purged; only accounts with the reveal permission see it.
* ``human_review`` True: unsure answers go to human helpers. False: they never do; the answer says so.
* ``training_use`` True: labelled episodes teach the model. False: the episode never enters a training set,
  an export or the instant-learning memory (``training_excluded_ask_ids``).
* ``memory`` True: the assistant may remember things for the wearer (the memory skill checks ``memory``).

Redaction itself is not optional: it happens before storage whatever the consent says.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import Session

from lookloop.domain import ANONYMOUS, Consent
from lookloop.humans.tables import DeviceRow
from lookloop.privacy.tables import ConsentRow
from lookloop.store.db import Database
from lookloop.store.tables import AskRow

DEFAULT = Consent()


def wearer_of(session: Session, device_id: str) -> str:
    """The wearer a device belongs to; a device unknown to the devices table stands for itself."""
    if device_id and device_id != ANONYMOUS:
        wearer = session.scalar(select(DeviceRow.wearer_id).where(DeviceRow.id == device_id))
        if wearer:
            return str(wearer)
    return device_id


def devices_of(session: Session, wearer_id: str) -> list[str]:
    """Every device id whose data belongs to the wearer (the wearer id itself too, for tokenless devices)."""
    ids = {wearer_id}
    ids.update(str(d) for d in session.scalars(select(DeviceRow.id).where(DeviceRow.wearer_id == wearer_id)))
    return sorted(ids)


def _row_to_consent(row: ConsentRow | None) -> Consent:
    if row is None:
        return DEFAULT
    return Consent(
        store_frames=row.store_frames,
        keep_originals=row.keep_originals,
        human_review=row.human_review,
        training_use=row.training_use,
        memory=row.memory,
    )


class ConsentService:
    """Reads and changes consent; ``for_device`` is what the ask path and the other parts call."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def for_wearer(self, wearer_id: str) -> Consent:
        with self.db.session() as s:
            return _row_to_consent(s.get(ConsentRow, wearer_id))

    def for_device(self, device_id: str) -> Consent:
        """The consent of the device's wearer (anonymous devices get the defaults)."""
        return self.lookup(device_id)[1]

    def lookup(self, device_id: str) -> tuple[str, Consent]:
        """(wearer id, consent) for a device, in one session."""
        if not device_id or device_id == ANONYMOUS:
            return ANONYMOUS, DEFAULT
        with self.db.session() as s:
            wearer = wearer_of(s, device_id)
            return wearer, _row_to_consent(s.get(ConsentRow, wearer))

    def training_excluded_ask_ids(self) -> set[str]:
        """Asks that must never enter a training set, an export or the learning memory."""
        with self.db.session() as s:
            return training_excluded_ask_ids(s)

    def training_use(self, device_id: str) -> bool:
        return self.for_device(device_id).training_use

    def memory_allowed(self, device_id: str) -> bool:
        return self.for_device(device_id).memory

    def set(self, wearer_id: str, **changes: bool | None) -> Consent:
        """Changes some fields; the rest keep their current value."""
        if not wearer_id or wearer_id == ANONYMOUS:
            raise ValueError("anonymous asks have no wearer whose consent could be changed")
        with self.db.session() as s:
            row = s.get(ConsentRow, wearer_id)
            new = _row_to_consent(row).updated(dict(changes))
            if row is None:
                row = ConsentRow(wearer_id=wearer_id)
                s.add(row)
            for key, value in new.as_dict().items():
                setattr(row, key, value)
        return new


def _wearers_without(session: Session, column: Any) -> list[str]:
    return [str(w) for w in session.scalars(select(ConsentRow.wearer_id).where(column == false()))]


def training_excluded_device_ids(session: Session) -> set[str]:
    """Devices whose wearer said no to training use."""
    out: set[str] = set()
    for wearer in _wearers_without(session, ConsentRow.training_use):
        out.update(devices_of(session, wearer))
    return out


def training_excluded_ask_ids(session: Session) -> set[str]:
    """Asks that must never enter a training set, an export or the learning memory."""

    devices = training_excluded_device_ids(session)
    if not devices:
        return set()
    return {str(a) for a in session.scalars(select(AskRow.id).where(AskRow.device_id.in_(devices)))}


def training_allowed(session: Session, device_column: Any) -> ColumnElement[bool]:
    """A SQL filter for queries over episodes: ``.where(training_allowed(s, AskRow.device_id))``."""
    devices = training_excluded_device_ids(session)
    if not devices:
        return true()
    # Rows with no device (imports, catalogue photos) belong to no wearer and stay in.
    return or_(device_column.is_(None), device_column.not_in(sorted(devices)))


def exportable_ask_ids(session: Session) -> set[str]:
    """Every ask whose wearer allows training use (the exports' gate, ``lookloop.exports.consent``)."""

    stmt = select(AskRow.id).where(training_allowed(session, AskRow.device_id))
    return {str(a) for a in session.scalars(stmt)}
