"""One way to export a PyTorch module to ONNX, used by every model lookloop converts (embedders, fine-tunes)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def export_onnx_file(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """TorchScript-based export at opset 17 (runs offline; the newer exporter needs onnxscript)."""
    import torch  # PyTorch takes seconds to import: only model export needs it

    with warnings.catch_warnings():
        # The exporter's notes (it is the older exporter, constant folding, tracing) are for PyTorch developers:
        # nothing an operator could act on, and they fill pages at a first start.
        warnings.filterwarnings("ignore", module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
