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


def _ink_gaps(gray: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> list[tuple[int, int]]:
    """Column ranges inside the box with no ink, as wide as a word gap (a third of the text height)."""
    crop = gray[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    if crop.size == 0 or crop.shape[1] < 3:
        return []
    lo, hi = float(np.percentile(crop, 5)), float(np.percentile(crop, 95))
    if hi - lo < 30:
        return []  # no contrast to tell ink from paper
    dark_text = float(np.median(crop)) > (lo + hi) / 2
    ink = crop < (lo + hi) / 2 if dark_text else crop > (lo + hi) / 2
    blank = ink.sum(axis=0) == 0
    min_gap = max(2, int(0.3 * crop.shape[0]))
    gaps, start = [], None
    for i, empty in enumerate([*blank.tolist(), False]):
        if empty and start is None:
            start = i
        elif not empty and start is not None:
            if i - start >= min_gap:
                gaps.append((x0 + start, x0 + i))
            start = None
    return gaps


def _cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef"


def with_word_gaps(gray: np.ndarray, chars: list[str], boxes: list[Any]) -> str | None:
    """A line's text with a space wherever the ink between two recognised characters has a word gap."""
    if len(chars) != len(boxes) or len(chars) < 2:
        return None
    xs = [[float(p[0]) for p in b] for b in boxes]
    ys = [float(p[1]) for b in boxes for p in b]
    gaps = _ink_gaps(gray, int(min(min(x) for x in xs)), int(max(max(x) for x in xs)) + 1,
                     int(min(ys)), int(max(ys)) + 1)
    if not gaps:
        return None
    centres = [(min(x) + max(x)) / 2 for x in xs]
    out = [chars[0]]
    for i in range(1, len(chars)):
        wordy = not (_cjk(chars[i]) or _cjk(out[-1]))  # Chinese is written without spaces
        if wordy and chars[i] != " " and out[-1] != " " and any(centres[i - 1] < (a + b) / 2 < centres[i]
                                                                for a, b in gaps):
            out.append(" ")
        out.append(chars[i])
    return "".join(out).strip()


def join_rows(lines: list[TextLine]) -> list[str]:
    """The text as rows: pieces on one visual row joined with a space, rows top to bottom."""
    rows: list[list[TextLine]] = []
    for line in lines:  # in reading order: a row's pieces are adjacent
        if rows and abs((line.top + line.bottom) / 2 - (rows[-1][-1].top + rows[-1][-1].bottom) / 2) < 0.5 * max(
            line.height, rows[-1][-1].height, 1.0
        ):
            rows[-1].append(line)
        else:
            rows.append([line])
    return [" ".join(ln.text.strip() for ln in row) for row in rows]


class RapidOcrReader:
    """RapidOCR (PP-OCR detection + recognition, zh + en) from the ``rapidocr_onnxruntime`` wheel."""

    version = "rapidocr-onnxruntime-ppocr"

    def __init__(self, min_score: float = 0.5, *, threads: int | None = None) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()
        self.min_score = min_score
        self.threads = threads  # None: ONNX Runtime's default (every core)

    def _get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR  # slow to import: loaded on first use

                options = {} if self.threads is None else {"intra_op_num_threads": self.threads,
                                                            "inter_op_num_threads": 1}
                self._engine = RapidOCR(**options)
            return self._engine

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        engine = self._get()
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        result = engine(bgr, return_word_box=True)[0]
        gray = rgb.mean(axis=2) if rgb.ndim == 3 else rgb.astype(np.float64)
        lines = []
        for found in result or []:
            box, text, score = found[0], str(found[1]), float(found[2])
            if score < self.min_score or not text.strip():
                continue
            if len(found) >= 5:
                # The recogniser drops the spaces of small print: put them back where the ink has a word gap.
                text = with_word_gaps(gray, found[4], found[3]) or text
            lines.append(TextLine(text=text, score=score, box=tuple((float(x), float(y)) for x, y in box)))
        return reading_order(lines)


_shared: RapidOcrReader | None = None


def shared_reader() -> RapidOcrReader:
    """One process-wide reader: the models take a second to load."""
    global _shared
    if _shared is None:
        _shared = RapidOcrReader()
    return _shared
