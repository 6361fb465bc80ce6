"""Fine-tuning the EfficientNet-Lite backbone on CPU.

Two cores cannot afford whole-network epochs, so the early blocks stay frozen: their activations are
computed once for a few augmented views of every image, and only the late blocks, the head convolution
and a classifier are trained on those stored activations (with flips and crops in feature space as
further augmentation). The result is a whole backbone, exported to ONNX for serving.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookloop.models.embcache import ProgressFn
from lookloop.models.embedder import PIXEL_MEAN, PIXEL_STD, export_onnx, load_torch_backbone, variant_image_size
from lookloop.models.onnx_export import export_onnx_file

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class FinetuneConfig:
    """Recipe; the defaults were chosen to fit a 45-minute benchmark on two shared cores."""

    variant: str = "lite0"
    train_from: int = 10  # first trainable MBConv block (Lite0 has 16): 0.861 on val in 20 min (14: 0.841)
    views: int = 3  # augmented views per image whose frozen activations are stored
    epochs: int = 5
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.02
    label_smoothing: float = 0.1
    min_crop: float = 0.45  # random-resized-crop scale range lower bound
    seed: int = 0
    time_budget_s: float = 1800.0  # training stops early (keeping the schedule's end) past this
    threads: int = 2

    def digest(self) -> str:
        return hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


@dataclass
class FinetuneResult:
    backbone: Any  # torch.nn.Module: the whole EfficientNet, tuned
    classes: tuple[str, ...]
    train_seconds: float
    epochs_run: int
    final_train_loss: float


def _load_rgb(path: Path, size: int) -> np.ndarray:
    import cv2  # OpenCV's native libraries load on first use

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return np.asarray(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))


def _view(img: np.ndarray, size: int, rng: np.random.Generator, k: int, min_crop: float) -> np.ndarray:
    """View 0 is the plain resize the server sees; the others are random resized crops, half flipped."""
    import cv2  # OpenCV's native libraries load on first use

    if k == 0:
        out = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    else:
        h, w = img.shape[:2]
        scale = rng.uniform(min_crop, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, round(h * np.sqrt(scale / ratio))))
        cw = int(min(w, round(w * np.sqrt(scale * ratio))))
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        out = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (size, size), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            out = out[:, ::-1]
        # Mild colour jitter: shop lighting varies.
        out = np.clip(out.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20), 0, 255)
    return ((np.asarray(out, np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)


def _prefix(backbone: torch.nn.Module, x: torch.Tensor, upto: int) -> torch.Tensor:
    net: Any = backbone
    x = net._swish(net._bn0(net._conv_stem(x)))
    for block in list(net._blocks)[:upto]:
        x = block(x)
    return x


def _onnx_prefix(
    backbone: torch.nn.Module, upto: int, size: int, directory: Path, threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort  # slow to import: loaded on first use
    import torch  # PyTorch takes seconds to import: only training and model export need it

    class _Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _prefix(self.net, x, upto)

    path = directory / "prefix.onnx"
    with torch.no_grad():
        export_onnx_file(_Head().eval(), (torch.zeros(1, 3, size, size),), path, input_names=["pixels"],
                         output_names=["act"], dynamic_axes={"pixels": {0: "batch"}, "act": {0: "batch"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["act"], {"pixels": batch})[0])

    return run


class _Suffix:
    """The trainable tail of the backbone plus a classifier, as one torch module."""

    def __new__(cls, backbone: torch.nn.Module, start: int, n_classes: int) -> Any:
        import torch  # PyTorch takes seconds to import: only training and model export need it

        class _Tail(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                net: Any = backbone
                self.blocks = torch.nn.ModuleList(list(net._blocks)[start:])
                self.conv_head = net._conv_head
                self.bn1 = net._bn1
                self.act = net._swish
                self.offset = start
                self.total = len(net._blocks)
                self.drop_connect = float(net._global_params.drop_connect_rate or 0.0)
                self.dropout = torch.nn.Dropout(0.2)
                self.fc = torch.nn.Linear(1280, n_classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                for i, block in enumerate(self.blocks):
                    rate = self.drop_connect * float(i + self.offset) / self.total
                    x = block(x, drop_connect_rate=rate)
                x = self.act(self.bn1(self.conv_head(x)))
                out: torch.Tensor = self.fc(self.dropout(x.mean(dim=(2, 3))))
                return out

        return _Tail()


def finetune_backbone(
    paths: Sequence[Path],
    labels: Sequence[str],
    config: FinetuneConfig | None = None,
    *,
    progress: ProgressFn | None = None,
) -> FinetuneResult:
    """Tunes the late blocks of the pretrained backbone on labelled images (whatever the caller allows in)."""
    import torch  # PyTorch takes seconds to import: only training and model export need it

    cfg = config or FinetuneConfig()
    if len(paths) != len(labels):
        raise ValueError("paths and labels must line up")
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ValueError("fine-tuning needs labels of at least two classes")
    # The same label set gives the same backbone whatever order the labels came in (strategies differ only
    # in that order once every label is spent), so runs compare recipes, not shuffles.
    pairs = sorted((str(p), lab) for p, lab in zip(paths, labels, strict=True))
    paths, labels = [Path(p) for p, _ in pairs], [lab for _, lab in pairs]
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    size = variant_image_size(cfg.variant)
    backbone = load_torch_backbone(cfg.variant)
    backbone.eval()
    start = time.perf_counter()

    # 1. Frozen activations for every view, once, through ONNX Runtime (several times faster than torch here).
    n = len(paths)
    feats: list[np.ndarray] = []
    ys: list[int] = []
    col = {c: i for i, c in enumerate(classes)}
    chunk = 16
    with tempfile.TemporaryDirectory() as tmp:
        run_prefix = _onnx_prefix(backbone, cfg.train_from, size, Path(tmp), cfg.threads)
        for lo in range(0, n, chunk):
            batch: list[np.ndarray] = []
            for p, lab in zip(paths[lo : lo + chunk], labels[lo : lo + chunk], strict=True):
                img = _load_rgb(Path(p), 256)
                for k in range(cfg.views):
                    batch.append(_view(img, size, rng, k, cfg.min_crop))
                    ys.append(col[lab])
            feats.append(run_prefix(np.stack(batch)).astype(np.float16))
            if progress:
                progress("fine-tuning: frozen activations", min(lo + chunk, n), n)
    x_all = torch.from_numpy(np.concatenate(feats))
    y_all = torch.tensor(ys, dtype=torch.long)
    del feats

    # 2. Train the tail.
    tail = _Suffix(backbone, cfg.train_from, len(classes))
    tail.train()
    params = [p for p in tail.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, (len(y_all) + cfg.batch - 1) // cfg.batch)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    last_loss = float("nan")
    epochs_run = 0
    train_start = time.perf_counter()
    budget = cfg.time_budget_s - (train_start - start)
    for _epoch in range(cfg.epochs):
        order = torch.randperm(len(y_all), generator=gen)
        running = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch : (b + 1) * cfg.batch]
            xb = x_all[idx].float()
            # Feature-space augmentation: flips and a one-cell random shift.
            if torch.rand(1, generator=gen).item() < 0.5:
                xb = xb.flip(-1)
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
            if dy or dx:
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = loss_fn(tail(xb), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < total - 1:
                sched.step()
            step += 1
            running += float(loss.item())
            if progress:
                progress("fine-tuning: training", step, total)
            # Out of time: jump to the end of the schedule (small steps) rather than stop mid-peak.
            if time.perf_counter() - train_start > budget and step < total - 1:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * 0.01
        last_loss = running / steps_per_epoch
        epochs_run += 1
        if time.perf_counter() - train_start > budget * 1.1:
            break
    tail.eval()
    backbone.eval()
    return FinetuneResult(
        backbone=backbone,
        classes=classes,
        train_seconds=time.perf_counter() - start,
        epochs_run=epochs_run,
        final_train_loss=last_loss,
    )


def export_finetuned(result: FinetuneResult, directory: Path, *, variant: str = "lite0") -> Path:
    """The tuned backbone as the ONNX feature network the server loads."""
    path = directory / "backbone.onnx"
    export_onnx(result.backbone, path, variant_image_size(variant))
    return path
