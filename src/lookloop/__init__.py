"""lookloop: AI glasses that answer what they are sure of, ask a human for the rest, and learn from every answer.

The public API is re-exported here; everything else lives in modules whose layout follows the loop.
"""

import os as _os

# Set before NumPy loads OpenBLAS: its idle threads then sleep at once instead of spinning for ~0.1 s after
# every product. A server runs a small product per ask, so with the default one idle BLAS thread kept a core
# fully busy between asks. An operator's own value wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from lookloop.config import Settings, get_settings  # noqa: E402
from lookloop.device.client import GlassesClient  # noqa: E402
from lookloop.domain import Answer, Ask, AskRecord, Candidate, CatalogItem, Decision, Label, Outcome  # noqa: E402
from lookloop.errors import (  # noqa: E402
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
from lookloop.system import Lookloop  # noqa: E402

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
