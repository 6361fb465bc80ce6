"""price: "how much is this?" → the catalogue price, by barcode when one is readable, else by what it looks like."""

from __future__ import annotations

import csv
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from lookloop.domain import Answer, Ask, Candidate, CatalogItem, Decision, PolicyDecision, Prediction
from lookloop.errors import BadInput

# A barcode spanning the frame is missed at full size by OpenCV's detector, a small one when shrunk: try a
# few sizes and stop at the first that decodes.
_SCALES = (1.0, 0.75, 1.5, 0.5, 0.33, 2.0, 0.25)


@dataclass(frozen=True)
class Barcode:
    value: str
    kind: str


class BarcodeReader:
    """OpenCV's 1-D barcode detector (EAN-8/13, UPC-A/E), run over a small scale pyramid."""

    version = "opencv-barcode"

    def __init__(self) -> None:
        import cv2  # OpenCV's native libraries load on first use

        if not hasattr(cv2, "barcode"):
            raise RuntimeError("this OpenCV build has no barcode module")
        self._detector = cv2.barcode.BarcodeDetector()
        self._lock = threading.Lock()  # the detector object is not documented as thread-safe

    def read(self, rgb: np.ndarray) -> list[Barcode]:
        import cv2  # OpenCV's native libraries load on first use

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        for scale in _SCALES:
            if scale == 1.0:
                img = gray
            else:
                if min(gray.shape[:2]) * scale < 60 or max(gray.shape[:2]) * scale > 4000:
                    continue
                interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
                img = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interp)
            with self._lock:
                ok, values, kinds, _ = self._detector.detectAndDecodeWithType(img)
            found = [Barcode(v, k) for v, k in zip(values or (), kinds or (), strict=False) if ok and v]
            if found:
                return found
        return []


@lru_cache(maxsize=1)
def demo_units() -> dict[str, str]:
    """Product name → pricing unit ("kg", "piece", …) from the shipped demo price list."""
    text = resources.files("lookloop").joinpath("data/demo_prices.csv").read_text(encoding="utf-8")
    return {row["name"]: row.get("unit") or "" for row in csv.DictReader(text.splitlines())}


def price_text(item: CatalogItem) -> str:
    """'Granny Smith — 31.90 SEK per kg'."""
    if item.price is None:
        return f"{item.display_name} — no price in the catalogue"
    unit = demo_units().get(item.name, "")
    per = f" per {unit}" if unit else ""
    return f"{item.display_name} — {item.price:.2f} {item.currency}{per}"


class PriceSkill:
    """Barcode first (exact, confidence 1); otherwise identify's prediction, thresholded by the policy."""

    name = "price"
    needs_frame = True
    calibrated = True

    def __init__(
        self,
        *,
        predict: Callable[[Ask], tuple[Prediction, str]],
        decide: Callable[[np.ndarray], PolicyDecision],
        find_item: Callable[[str], CatalogItem | None],
        items: Callable[[], Sequence[CatalogItem]],
        barcodes: BarcodeReader | None = None,
    ) -> None:
        self._predict = predict
        self._decide = decide
        self._find = find_item
        self._items = items
        self._barcodes = barcodes

    def by_barcode(self, values: Sequence[str]) -> CatalogItem | None:
        wanted = {v.lstrip("0") for v in values}
        for item in self._items():
            # UPC-A read as EAN-13 gains a leading 0; compare without leading zeros
            if item.barcode and item.barcode.strip().lstrip("0") in wanted:
                return item
        return None

    def run(self, ask: Ask) -> Answer:
        if ask.frame is None:
            raise BadInput("price needs an image")
        codes = self._barcodes.read(ask.frame.rgb) if self._barcodes is not None else []
        if codes:
            item = self.by_barcode([c.value for c in codes])
            if item is not None:
                return Answer(
                    text=price_text(item),
                    skill=self.name,
                    confidence=1.0,
                    model_version=BarcodeReader.version,
                    result=self._result(item, item.name, via="barcode", barcode=codes[0].value),
                    policy="barcode",
                )
        pred, version = self._predict(ask)
        label, _ = pred.top
        item = self._find(label)
        decision = self._decide(pred.probs)
        shown = item.display_name if item else label.replace("-", " ").replace("_", " ")
        if decision.decision == Decision.ESCALATE:
            text = f"Not sure — maybe {shown}; asking a helper for the price."
        elif item is None:
            text = f"{shown} — not in the catalogue, so I have no price."
        else:
            text = price_text(item)
        result = self._result(item, label, via="identify", barcode=codes[0].value if codes else None)
        result.update({"threshold": decision.threshold, "nearest_similarity": round(pred.nearest_similarity, 4)})
        return Answer(
            text=text,
            skill=self.name,
            confidence=round(decision.confidence, 4),
            decision=decision.decision,
            model_version=version,
            result=result,
            candidates=tuple(Candidate(lab, round(p, 4)) for lab, p in pred.top_k(5)),
            policy=decision.policy,
        )

    @staticmethod
    def _result(item: CatalogItem | None, label: str, *, via: str, barcode: str | None) -> dict[str, object]:
        return {
            "label": item.name if item else label,
            "name": item.display_name if item else label,
            "price": item.price if item else None,
            "currency": item.currency if item else None,
            "unit": demo_units().get(item.name, "") if item else "",
            "via": via,
            "barcode": barcode,
        }
