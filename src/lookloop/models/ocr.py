"""Scene-text OCR (Chinese + English) with RapidOCR on ONNX Runtime."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: tuple[tuple[float, float], ...]  # four corner points, clockwise from top-left

    @property
    def top(self) -> float:
        return min(p[1] for p in self.box)

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self.box)

    @property
    def left(self) -> float:
        return min(p[0] for p in self.box)

    @property
    def height(self) -> float:
        return self.bottom - self.top


@runtime_checkable
class TextReader(Protocol):
    version: str

    def read(self, rgb: np.ndarray) -> list[TextLine]: ...


def reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Sorts lines top-to-bottom, then left-to-right within a visual row."""
    if not lines:
        return []
    ordered = sorted(lines, key=lambda ln: (ln.top + ln.bottom) / 2)
    rows: list[list[TextLine]] = []
    for line in ordered:
        centre = (line.top + line.bottom) / 2
        if rows:
            last = rows[-1]
            row_centre = sum((ln.top + ln.bottom) / 2 for ln in last) / len(last)
            row_height = max(ln.height for ln in last)
            # Boxes whose centres sit within half a line height belong to the same row.
            if abs(centre - row_centre) < 0.5 * max(row_height, line.height, 1.0):
                last.append(line)
                continue
        rows.append([line])
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.left)]


class RapidOcrReader:
    """RapidOCR (PP-OCR detection + recognition, zh + en) from the ``rapidocr_onnxruntime`` wheel."""

    version = "rapidocr-onnxruntime-ppocr"

    def __init__(self, min_score: float = 0.5) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()
        self.min_score = min_score

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR  # slow to import: loaded on first use

                self._engine = RapidOCR()
            return self._engine

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        engine = self._get()
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result, _ = engine(bgr)
        lines = [
            TextLine(text=str(text), score=float(score), box=tuple((float(x), float(y)) for x, y in box))
            for box, text, score in (result or [])
            if float(score) >= self.min_score and str(text).strip()
        ]
        return reading_order(lines)


_shared: RapidOcrReader | None = None


def shared_reader() -> RapidOcrReader:
    """One process-wide reader: the models take a second to load."""
    global _shared
    if _shared is None:
        _shared = RapidOcrReader()
    return _shared
