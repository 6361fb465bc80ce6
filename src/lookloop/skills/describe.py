"""describe: "what's in front of me?" → a vision-language backend's description when configured; otherwise
what identify, read and a face count can say, with an offer to ask a human."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lookloop.domain import Answer, Ask, Decision, PolicyDecision, Prediction
from lookloop.errors import BadInput, LookloopError, NotConfigured
from lookloop.models.backends import ChatBackend, system_message, user_message
from lookloop.models.faces import make_detector
from lookloop.models.ocr import TextReader

log = logging.getLogger(__name__)

OFFER = "Say 'ask a helper' and a person will describe it."
NO_VISION = "I can't describe scenes: no vision model is set up."
MAX_SIDE = 1024


def jpeg_for_backend(rgb: np.ndarray, max_side: int = MAX_SIDE) -> bytes:
    """The frame re-encoded as a modest JPEG: VLM servers bill and time by pixels."""
    import cv2  # OpenCV's native libraries load on first use

    scale = min(1.0, max_side / max(rgb.shape[:2]))
    img = rgb if scale >= 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise BadInput("the frame could not be encoded")
    return bytes(buf.tobytes())


@dataclass(frozen=True)
class LocalSight:
    """What the offline models make of a frame."""

    product: str | None
    product_confidence: float
    text_lines: tuple[str, ...]
    faces: int | None


class FaceCounter:
    """Counts faces with the privacy part's detector (libfacedetection CNN), or OpenCV's Haar cascade."""

    def __init__(self) -> None:
        self._detector: object | None = None
        self._tried = False

    def count(self, rgb: np.ndarray) -> int | None:
        import cv2  # OpenCV's native libraries load on first use

        if not self._tried:
            self._tried = True
            try:

                self._detector = make_detector("fast")
            except Exception as exc:  # noqa: BLE001 - no detector means "no face count", not a failed ask
                log.info("no face detector (%s)", exc)
        if self._detector is None:
            return None
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        return len(self._detector.detect(bgr))  # type: ignore[attr-defined]


class DescribeSkill:
    name = "describe"
    needs_frame = True
    calibrated = False

    PROMPT = (
        "You are the eyes of someone wearing smart glasses. In one or two short sentences, describe what is "
        "in front of them: the main objects, people (without guessing identities) and any important text."
    )

    def __init__(
        self,
        *,
        vision: Callable[[], ChatBackend],
        predict: Callable[[Ask], tuple[Prediction, str]],
        decide: Callable[[np.ndarray], PolicyDecision],
        reader: Callable[[], TextReader],
        faces: FaceCounter | None = None,
        display: Callable[[str], str] = lambda s: s.replace("-", " ").replace("_", " "),
    ) -> None:
        self._vision = vision
        self._predict = predict
        self._decide = decide
        self._reader = reader
        self._faces = faces
        self._display = display

    def run(self, ask: Ask) -> Answer:
        if ask.frame is None:
            raise BadInput("describe needs an image")
        reason = ""
        configured = True
        try:
            backend = self._vision()
        except NotConfigured as exc:
            reason, configured = exc.message, False
        else:
            try:
                reply = backend.complete(
                    [
                        system_message(self.PROMPT),
                        user_message(ask.question, [(jpeg_for_backend(ask.frame.rgb), "image/jpeg")]),
                    ],
                    max_tokens=200,
                ).strip()
                if reply:
                    return Answer(
                        text=reply,
                        skill=self.name,
                        confidence=1.0,
                        model_version=f"{backend.kind}:{backend.model}",
                        result={"via": "vision-backend", "description": reply},
                    )
                reason = "the vision backend sent an empty reply"
            except LookloopError as exc:
                reason = exc.message
                log.warning("vision backend failed (%s); describing with the local models", reason)
        return self._local(ask, reason, configured=configured)

    def sight(self, ask: Ask) -> LocalSight:
        assert ask.frame is not None
        pred, _ = self._predict(ask)
        decision = self._decide(pred.probs)
        label, _ = pred.top
        product = self._display(label) if decision.decision == Decision.ANSWER else None
        lines = tuple(ln.text for ln in self._reader().read(ask.frame.rgb))
        faces = self._faces.count(ask.frame.rgb) if self._faces is not None else None
        return LocalSight(product, float(decision.confidence), lines, faces)

    def _local(self, ask: Ask, reason: str, *, configured: bool) -> Answer:
        seen = self.sight(ask)
        # Said first and plainly: what follows is what the small local models picked out, not a description.
        parts: list[str] = ["The vision model did not answer." if configured else NO_VISION]
        if seen.product:
            parts.append(f"Looks like {seen.product}.")
        if seen.faces:
            parts.append(f"{seen.faces} face{'s' if seen.faces != 1 else ''} in view.")
        if seen.text_lines:
            text = " / ".join(seen.text_lines[:2])
            parts.append(f"Text: {text[:80]}")
        if len(parts) == 1:
            parts.append("I can't tell much here myself.")
        parts.append(OFFER)
        confidence = seen.product_confidence if seen.product else 0.0
        return Answer(
            text=" ".join(parts),
            skill=self.name,
            confidence=round(confidence, 4),
            model_version="local:identify+read+faces",
            result={
                "via": "local",
                "product": seen.product,
                "text": list(seen.text_lines),
                "faces": seen.faces,
                "offer_human": True,
                "vision_backend": reason or "failed",
            },
        )
