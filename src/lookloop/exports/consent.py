"""The one gate every export passes: which asks may be used for training (the privacy layer's rule)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from lookloop.privacy.consent import exportable_ask_ids as _exportable


def exportable_ask_ids(session: Session) -> set[str]:
    """Ids of the asks whose wearer allows training use (``lookloop.privacy.consent`` decides)."""
    return _exportable(session)
