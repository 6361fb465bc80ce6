"""Redaction before storage and before any reviewer sees a frame: blur bystander faces, fill personal text."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookloop.errors import BadInput
from lookloop.models.faces import Box, FaceDetector, make_detector
from lookloop.models.ocr import RapidOcrReader, TextLine
from lookloop.privacy.pii import find_pii_lines

OCR_VERSION = "rapidocr-onnxruntime-ppocr"
PII_VERSION = "pii-regex-2(name-cues,email,phone,card-luhn,iban-mod97,ssn,personnummer,passport,digits>=10)"


@dataclass(frozen=True)
class Region:
    """One redacted area: ``kind`` is face, name, email, phone, card or id; ``box`` is [x, y, w, h] in pixels."""

    kind: str
    box: tuple[int, int, int, int]
    detector: str
    score: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "box": list(self.box), "detector": self.detector, "score": self.score}


@dataclass
class RedactionResult:
    image: np.ndarray  # BGR uint8, redacted
    regions: list[Region] = field(default_factory=list)
    model_version: str = ""

    def jpeg(self, quality: int = 90) -> bytes:
        import cv2  # OpenCV's native libraries load on first use

        ok, buf = cv2.imencode(".jpg", self.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise BadInput("could not encode the redacted image as JPEG")
        return bytes(buf)

    @property
    def kinds(self) -> list[str]:
        return sorted({r.kind for r in self.regions})


def _to_bgr(image: bytes | np.ndarray) -> np.ndarray:
    import cv2  # OpenCV's native libraries load on first use

    if isinstance(image, bytes | bytearray | memoryview):
        data = np.frombuffer(bytes(image), dtype=np.uint8)
        if data.size == 0:
            raise BadInput("the image is empty")
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if decoded is None:
            raise BadInput("the image could not be decoded")
        return np.asarray(decoded)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise BadInput("expected image bytes or a uint8 BGR numpy array")
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise BadInput(f"expected an HxWx3 BGR image, got shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3]).copy()


def blur_box(image: np.ndarray, box: Box, *, pad: float = 0.15) -> tuple[int, int, int, int]:
    """Irreversibly obscures ``box`` (padded): pixelate to ~6 blocks across, then a strong Gaussian blur."""
    import cv2  # OpenCV's native libraries load on first use

    height, width = image.shape[:2]
    px, py = int(box.w * pad), int(box.h * pad)
    x0, y0 = max(0, box.x - px), max(0, box.y - py)
    x1, y1 = min(width, box.x + box.w + px), min(height, box.y + box.h + py)
    if x1 <= x0 or y1 <= y0:
        return (x0, y0, 0, 0)
    roi = image[y0:y1, x0:x1]
    w, h = x1 - x0, y1 - y0
    # Pixelating first throws the detail away; blurring alone can be partly undone by deconvolution.
    small = cv2.resize(
        roi, (max(1, w // max(4, w // 6)), max(1, h // max(4, h // 6))), interpolation=cv2.INTER_AREA
    )
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    k = max(3, (min(w, h) // 3) | 1)
    image[y0:y1, x0:x1] = cv2.GaussianBlur(coarse, (k, k), 0)
    return (x0, y0, w, h)


def _sub_quad(quad: np.ndarray, f0: float, f1: float) -> np.ndarray:
    """The part of a text-line quad (tl, tr, br, bl) between fractions f0..f1 of its length."""
    tl, tr, br, bl = quad
    return np.array(
        [tl + (tr - tl) * f0, tl + (tr - tl) * f1, bl + (br - bl) * f1, bl + (br - bl) * f0], dtype=np.float32
    )


def _advance(ch: str) -> float:
    """A character's rough advance width in ems in a proportional sans font (DejaVu, Arial, Helvetica alike):
    enough to place a span inside an OCR line box far better than equal widths would."""
    if ch in " .,:;'’|!`iljI":
        return 0.3
    if ch in "frt-()[]/\\\"":
        return 0.38
    if ch in "mwMW@%":
        return 0.92
    if ch.isdigit():
        return 0.64
    if ch.isupper():
        return 0.72
    return 0.6


def span_fractions(text: str, start: int, end: int) -> tuple[float, float]:
    """Where characters ``start..end`` of an OCR line lie along its box, as fractions of its length, with
    one average character of margin each side (OCR boxes and the widths above are both approximate)."""
    widths = [_advance(ch) for ch in text]
    total = sum(widths)
    if total <= 0:
        return 0.0, 1.0
    margin = total / len(widths)
    x0 = sum(widths[:start]) - margin
    x1 = sum(widths[:end]) + margin
    return max(0.0, x0 / total), min(1.0, x1 / total)


def _same_row(before: TextLine, after: TextLine) -> bool:
    """``after`` sits right of ``before`` on the same visual row (OCR split one row into two boxes)."""
    centre_a, centre_b = (before.top + before.bottom) / 2, (after.top + after.bottom) / 2
    close = abs(centre_a - centre_b) < 0.5 * max(before.height, after.height, 1.0)
    return close and after.left > before.left


class Redactor:
    """Holds the face detector and OCR reader; ``redact`` is thread-safe."""

    def __init__(self, face_detector: FaceDetector | None = None, *, face_mode: str = "fast") -> None:
        self._face_detector = face_detector
        self._face_mode = face_mode
        self._lock = threading.Lock()
        self._reader: Any = None

    @property
    def face_detector(self) -> FaceDetector:
        with self._lock:
            if self._face_detector is None:
                self._face_detector = make_detector(self._face_mode)
            return self._face_detector

    def model_version(self, *, faces: bool = True, text: bool = True) -> str:
        parts = []
        if faces:
            parts.append("faces=" + self.face_detector.version)
        if text:
            parts.append(f"text={OCR_VERSION}+{PII_VERSION}")
        return "; ".join(parts) if parts else "none"

    def text_regions(self, bgr: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(kind, polygon) for each personal-text span found by OCR."""

        with self._lock:
            if self._reader is None:
                # Its own OCR engine, apart from the read skill's, on one thread: it runs on the low-priority
                # redaction worker, and a pool of its own would spin on the cores that answer asks.
                self._reader = RapidOcrReader(threads=1)
            reader = self._reader
        out: list[tuple[str, np.ndarray]] = []
        lines = reader.read(np.ascontiguousarray(bgr[:, :, ::-1]))
        # Lines in reading order: a label line ("Surname") tells what the next line holds, and a line that
        # carries on the row before it may carry on a name.
        continues = [False] + [_same_row(a, b) for a, b in zip(lines, lines[1:], strict=False)]
        found = find_pii_lines([line.text for line in lines], continues)
        for line, matches in zip(lines, found, strict=True):
            quad = np.array(line.box, dtype=np.float32).reshape(4, 2)
            for m in matches:
                # Mask the character span's share of the box.
                f0, f1 = span_fractions(line.text, m.start, m.end)
                out.append((m.kind, _sub_quad(quad, f0, f1)))
        return out

    def redact(self, image: bytes | np.ndarray, *, faces: bool = True, text: bool = True) -> RedactionResult:
        import cv2  # OpenCV's native libraries load on first use

        bgr = _to_bgr(image)
        regions: list[Region] = []
        if faces:
            det = self.face_detector
            for b in det.detect(bgr):
                x, y, w, h = blur_box(bgr, b)
                if w and h:
                    regions.append(Region("face", (x, y, w, h), det.version, round(b.score, 3)))
        if text:
            height, width = bgr.shape[:2]
            for kind, poly in self.text_regions(bgr):
                pad = 0.12 * float(np.linalg.norm(poly[3] - poly[0]))
                x0 = int(max(0, np.floor(poly[:, 0].min() - pad)))
                y0 = int(max(0, np.floor(poly[:, 1].min() - pad)))
                x1 = int(min(width, np.ceil(poly[:, 0].max() + pad)))
                y1 = int(min(height, np.ceil(poly[:, 1].max() + pad)))
                if x1 <= x0 or y1 <= y0:
                    continue
                # Fill the padded axis-aligned box: a solid fill leaves nothing to recover.
                cv2.rectangle(bgr, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 0), thickness=-1)
                regions.append(Region(kind, (x0, y0, x1 - x0, y1 - y0), f"{OCR_VERSION}+{PII_VERSION}"))
        return RedactionResult(
            image=bgr, regions=regions, model_version=self.model_version(faces=faces, text=text)
        )


_default: Redactor | None = None
_default_lock = threading.Lock()


def default_redactor() -> Redactor:
    """One process-wide redactor (models load once)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Redactor()
        return _default


def redact(image: bytes | np.ndarray, *, faces: bool = True, text: bool = True) -> RedactionResult:
    """Blurs faces and fills personal text in a BGR image (or encoded image bytes)."""
    return default_redactor().redact(image, faces=faces, text=text)
