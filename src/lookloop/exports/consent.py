"""The one gate every export passes: which asks may be used for training."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lookloop.store.tables import AskRow


def _privacy_gate() -> Callable[[Session], set[str]] | None:
    """The privacy package's own rule, when it offers one, replaces the table-based rule below."""
    try:
        module = importlib.import_module("lookloop.privacy.consent")
    except ModuleNotFoundError:
        return None
    gate: Any = getattr(module, "exportable_ask_ids", None)
    return gate if callable(gate) else None


def _default_training_use() -> bool:
    """The documented default for wearers with no consent row (the privacy package owns it)."""
    try:
        module = importlib.import_module("lookloop.privacy.consent")
        consent_cls: Any = getattr(module, "Consent", None)
        if consent_cls is not None:
            return bool(consent_cls().training_use)
    except (ModuleNotFoundError, TypeError):
        pass
    return True


def exportable_ask_ids(session: Session) -> set[str]:
    """Ids of the asks whose wearer allows training use.

    An ask's device belongs to a wearer (``devices``); the wearer's ``consents.training_use`` decides, and a
    wearer without a row gets the privacy package's default. Devices not registered (anonymous asks, devices
    named by hand) have no wearer and also get the default.
    """
    gate = _privacy_gate()
    if gate is not None:
        return set(gate(session))
    try:
        from lookloop.humans.tables import DeviceRow
        from lookloop.privacy.tables import ConsentRow
    except ModuleNotFoundError:
        return set(session.scalars(select(AskRow.id)).all())
    default = _default_training_use()
    rows = session.execute(
        select(AskRow.id, ConsentRow.training_use)
        .outerjoin(DeviceRow, DeviceRow.id == AskRow.device_id)
        .outerjoin(ConsentRow, ConsentRow.wearer_id == DeviceRow.wearer_id)
    ).all()
    return {ask_id for ask_id, allowed in rows if (default if allowed is None else bool(allowed))}
