"""lookloop: AI glasses that answer what they are sure of, ask a human for the rest, and learn from every answer.

The public API is re-exported here; everything else lives in modules whose layout follows the loop.
"""

from lookloop.config import Settings, get_settings
from lookloop.device.client import GlassesClient
from lookloop.domain import Answer, Ask, AskRecord, Candidate, CatalogItem, Decision, Label, Outcome
from lookloop.errors import (
    BadInput,
    Conflict,
    Forbidden,
    LookloopError,
    NotConfigured,
    NotFound,
    TooLarge,
    Unauthorized,
    UnsupportedMedia,
)
from lookloop.system import Lookloop

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "Ask",
    "AskRecord",
    "BadInput",
    "Candidate",
    "CatalogItem",
    "Conflict",
    "Decision",
    "Forbidden",
    "GlassesClient",
    "Label",
    "Lookloop",
    "LookloopError",
    "NotConfigured",
    "NotFound",
    "Outcome",
    "Settings",
    "TooLarge",
    "Unauthorized",
    "UnsupportedMedia",
    "__version__",
    "get_settings",
]
