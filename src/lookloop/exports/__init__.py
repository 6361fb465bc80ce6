"""Exports of the loop's data: JSONL episodes, a Hugging Face dataset, KTO records, an image-folder tree.

Every export goes through :func:`lookloop.exports.consent.exportable_ask_ids`, so asks of wearers who did not
allow training use never leave the system.
"""

from lookloop.exports.consent import exportable_ask_ids
from lookloop.exports.episodes import Episode, LabelInfo, load_episodes

__all__ = ["Episode", "LabelInfo", "exportable_ask_ids", "load_episodes"]
