"""The exported names are the public contract: changing them is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import lookloop

# Adding, renaming or removing a public name means editing this list in the same change.
PUBLIC = [
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


def test_exported_names_are_pinned() -> None:
    assert sorted(lookloop.__all__) == PUBLIC
    assert len(set(lookloop.__all__)) == len(lookloop.__all__), "no name exported twice"


def test_every_exported_name_resolves() -> None:
    for name in lookloop.__all__:
        assert getattr(lookloop, name, None) is not None, name
    namespace: dict[str, object] = {}
    exec("from lookloop import *", namespace)  # what a star import gives a user
    assert {k for k in namespace if k != "__builtins__"} == set(PUBLIC)


def test_import_is_light() -> None:
    # Importing the package must not load torch or the OCR models: the CLI and SDK start fast.
    code = "import sys, lookloop; print('torch' in sys.modules, 'rapidocr_onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
