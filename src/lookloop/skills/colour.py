"""colour: "what colour is this?" → the dominant colour of the object in view, named in English and Chinese.

Pixels are weighted towards the centre of the frame (where the wearer looks), clustered with k-means in
CIELAB (perceptual distances), and the heaviest cluster is named by hue, saturation and lightness rules.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass

import numpy as np

from lookloop.domain import Answer, Ask
from lookloop.errors import BadInput

_L_WEIGHT = 0.5
_CJK = re.compile(r"[\u4e00-\u9fff]")

NAMES_ZH = {
    "red": "红色",
    "orange": "橙色",
    "yellow": "黄色",
    "green": "绿色",
    "cyan": "青色",
    "blue": "蓝色",
    "purple": "紫色",
    "pink": "粉色",
    "brown": "棕色",
    "beige": "米色",
    "black": "黑色",
    "white": "白色",
    "grey": "灰色",
}


@dataclass(frozen=True)
class ColourShare:
    name: str
    rgb: tuple[int, int, int]
    share: float  # of the centre-weighted mass

    @property
    def name_zh(self) -> str:
        return NAMES_ZH[self.name]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)


def name_colour(rgb: tuple[int, int, int]) -> str:
    """A basic colour term for an sRGB colour (Berlin & Kay's eleven, plus cyan and beige)."""
    r, g, b = (c / 255.0 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    hue = h * 360.0
    if v < 0.18:
        return "black"
    if s < 0.15 or (s < 0.22 and v < 0.5):
        if v > 0.82:
            return "white"
        return "grey" if v > 0.3 else "black"
    if hue >= 345 or hue < 12:
        return "pink" if s < 0.5 and v > 0.7 else "red"
    if hue < 50:
        if v < 0.5:
            return "brown"
        if hue >= 20 and s < 0.35 and v > 0.7:
            return "beige"
        return "red" if hue < 15 else "orange" if hue < 40 else "yellow"
    if hue < 70:
        # dark yellow is seen as olive green, not yellow (limes, cucumbers under warm shop light)
        return "yellow" if v >= 0.62 else "green"
    if hue < 165:
        return "green"
    if hue < 195:
        return "cyan"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "pink"


def _centre_weights(h: int, w: int, sigma: float = 0.22) -> np.ndarray:
    ys = (np.arange(h) - (h - 1) / 2) / (sigma * h)
    xs = (np.arange(w) - (w - 1) / 2) / (sigma * w)
    return np.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2)).astype(np.float32)


def dominant_colours(rgb: np.ndarray, *, k: int = 5, samples: int = 4000, seed: int = 0) -> list[ColourShare]:
    """Colour clusters of the centre-weighted frame, heaviest first (deterministic for a given seed)."""
    import cv2  # OpenCV's native libraries load on first use

    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BadInput("expected an RGB image")
    h, w = rgb.shape[:2]
    scale = 128 / max(h, w)
    # at least one pixel each way: a sliver of a frame (8 x 4000) must not shrink to nothing
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    small = np.ascontiguousarray(small, dtype=np.uint8)
    lab = cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    weights = _centre_weights(*small.shape[:2]).ravel()
    rng = np.random.default_rng(seed)
    # weighted k-means by sampling pixels in proportion to their weight
    idx = rng.choice(len(lab), size=min(samples, len(lab)), replace=True, p=weights / weights.sum())
    data = lab[idx].astype(np.float32)
    # shading changes lightness, not the colour: damp L so the lit and shaded sides of one object merge
    data[:, 0] *= _L_WEIGHT
    k = max(1, min(k, len(np.unique(data.round(0), axis=0))))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.5)
    best = np.zeros((len(data), 1), np.int32)
    _, raw_labels, raw_centres = cv2.kmeans(data, k, best, criteria, 3, cv2.KMEANS_PP_CENTERS)
    labels: np.ndarray = np.asarray(raw_labels)
    centres: np.ndarray = np.asarray(raw_centres, dtype=np.float32) / np.array([_L_WEIGHT, 1, 1], np.float32)
    counts = np.bincount(labels.ravel(), minlength=k).astype(np.float64)
    rgb_centres = cv2.cvtColor(centres.reshape(1, -1, 3).astype(np.float32), cv2.COLOR_Lab2RGB).reshape(-1, 3)
    merged: dict[str, list[float]] = {}  # name → [mass, r, g, b] (mass-weighted sums)
    for i in range(k):
        c = tuple(int(round(float(x) * 255)) for x in np.clip(rgb_centres[i], 0, 1))
        name = name_colour((c[0], c[1], c[2]))
        acc = merged.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        acc[0] += counts[i]
        for j in range(3):
            acc[1 + j] += counts[i] * c[j]
    total = float(counts.sum()) or 1.0
    out = [
        ColourShare(name, (round(m[1] / m[0]), round(m[2] / m[0]), round(m[3] / m[0])), round(float(m[0]) / total, 4))
        for name, m in merged.items()
        if m[0] > 0
    ]
    return sorted(out, key=lambda c: -c.share)


class ColourSkill:
    name = "colour"
    needs_frame = True
    calibrated = False
    version = "centre-kmeans-lab-v1"

    def run(self, ask: Ask) -> Answer:
        if ask.frame is None:
            raise BadInput("colour needs an image")
        shares = dominant_colours(ask.frame.rgb)
        top = shares[0]
        zh = bool(_CJK.search(ask.question)) or (ask.language or "").startswith("zh")
        # One language, the wearer's: a mixed answer reads oddly and is spoken with the wrong voice.
        text = top.name_zh if zh else top.name.capitalize()
        if len(shares) > 1 and shares[1].share >= 0.25:
            second = shares[1]
            text += f"，还有{second.name_zh}" if zh else f", with some {second.name}"
        return Answer(
            text=text,
            skill=self.name,
            # the share of the centre-weighted mass is an honest, if uncalibrated, measure of how clear-cut it is
            confidence=round(top.share, 4),
            model_version=self.version,
            result={
                "colour": top.name,
                "colour_zh": top.name_zh,
                "hex": top.hex,
                "palette": [
                    {"name": c.name, "name_zh": c.name_zh, "hex": c.hex, "share": c.share} for c in shares[:4]
                ],
            },
        )
