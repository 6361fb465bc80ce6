"""Pick the sharpest of the last few camera frames, skipping blurred ones (variance of the Laplacian)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Frame = bytes | bytearray | str | Path | np.ndarray

# Frames are scored at this width so the score does not depend on the camera's resolution.
_SCORE_WIDTH = 320


class FrameError(ValueError):
    """A frame that cannot be read as an image."""


def _gray(frame: Frame) -> np.ndarray:
    import cv2  # imported here so that ``import lookloop`` stays light

    if isinstance(frame, np.ndarray):
        img: np.ndarray = frame
    else:
        data = Path(frame).read_bytes() if isinstance(frame, str | Path) else bytes(frame)
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise FrameError("the frame is not a readable image (JPEG, PNG, WebP)")
        img = np.asarray(decoded)
    if img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2GRAY)
    elif img.ndim != 2:
        raise FrameError(f"a frame array must be HxW or HxWxC, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    h, w = img.shape
    if w > _SCORE_WIDTH:
        img = cv2.resize(img, (_SCORE_WIDTH, max(1, round(h * _SCORE_WIDTH / w))), interpolation=cv2.INTER_AREA)
    return img


def sharpness(frame: Frame) -> float:
    """Variance of the Laplacian of the grey frame at 320 px wide: higher is sharper."""
    import cv2  # OpenCV's native libraries load on first use

    return float(cv2.Laplacian(_gray(frame), cv2.CV_64F).var())


def pick_sharpest(frames: Sequence[Frame], last: int = 5, blur_ratio: float = 0.35) -> Frame:
    """The sharpest of the ``last`` frames.

    A frame scoring under ``blur_ratio`` of the best is counted as blurred and never chosen; among the
    rest the newest wins when scores are within 10 %, because the newest frame shows what the wearer
    looks at now.
    """
    if not frames:
        raise FrameError("no frames to choose from")
    recent = list(frames)[-last:]
    scores = [sharpness(f) for f in recent]
    best = max(scores)
    sharp = [i for i, s in enumerate(scores) if s >= blur_ratio * best]
    top = max(scores[i] for i in sharp)
    near_top = [i for i in sharp if scores[i] >= 0.9 * top]
    return recent[max(near_top)]


class FrameBuffer:
    """Keeps the last few frames a camera produced; ``best()`` is the one to send with an ask."""

    def __init__(self, size: int = 5) -> None:
        if size < 1:
            raise ValueError("a frame buffer needs room for at least one frame")
        self._frames: deque[Frame] = deque(maxlen=size)

    def push(self, frame: Frame) -> None:
        self._frames.append(frame)

    def __len__(self) -> int:
        return len(self._frames)

    def best(self) -> Frame | None:
        return pick_sharpest(list(self._frames), last=len(self._frames)) if self._frames else None
