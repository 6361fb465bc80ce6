"""translate: Chinese ↔ English through the chat backend when one is configured, otherwise a human.

The text comes from the question ("translate 我们试试看", "how do you say thank you in Chinese") or, when the
question names none, from the text read in the frame ("translate this sign").
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lookloop.domain import Answer, Ask, Decision
from lookloop.errors import LookloopError, NotConfigured
from lookloop.models.backends import ChatBackend, system_message, user_message
from lookloop.models.ocr import TextReader

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_TO_EN = re.compile(r"\b(?:in|into|to)\s+english\b|英文|英语|翻译成英", re.I)
_TO_ZH = re.compile(r"\b(?:in|into|to)\s+(?:chinese|mandarin)\b|中文|汉语|普通话|翻译成中", re.I)
_QUOTED = re.compile(r"[\"“”'‘’「」『』](.+?)[\"“”'‘’「」『』]")
_PATTERNS = (
    re.compile(r"^\s*(?:please\s+)?translate\s*[:：]?\s*(.*?)\s*"
               r"(?:\b(?:in|into|to)\s+(?:english|chinese|mandarin)\b)?\s*[?.!]?\s*$", re.I),
    re.compile(r"^\s*how\s+do\s+(?:you|i)\s+say\s+(.*?)\s+(?:in|into)\s+(?:english|chinese|mandarin)\s*[?.!]?\s*$",
               re.I),
    re.compile(r"^\s*what\s+does\s+(.*?)\s+mean\s*(?:in\s+(?:english|chinese))?\s*[?.!]?\s*$", re.I),
    re.compile(r"^\s*(?:请)?(?:帮我)?翻译(?:一下)?(?:成|为)?(?:中文|英文|英语|汉语)?\s*[:：，,]?\s*(.*?)\s*$"),
    re.compile(r"^\s*(.*?)\s*(?:用|的)?(?:英文|英语|中文)(?:怎么说|是什么)\s*[?？]?\s*$"),
)
_DEICTIC = re.compile(
    r"^(?:this|that|it|these|the sign|this sign|the label|this label|这个|那个|这)?\s*[?.!？。！]?$", re.I
)

_POINTER = re.compile(r"^(?:this|that|it)\s*[:：]\s*", re.I)

HONEST_INTERIM = "Translation isn't set up here — asking a helper."
FAILED_INTERIM = "The translator didn't answer — asking a helper."


def source_text(question: str) -> str:
    """The words to translate named in the question ('' when it points at the frame instead)."""
    quoted = _QUOTED.search(question)
    if quoted:
        return quoted.group(1).strip()
    for pattern in _PATTERNS:
        m = pattern.match(question)
        if m:
            text = m.group(1).strip(" ：:，,")
            if _DEICTIC.match(text):
                return ""
            return _POINTER.sub("", text, count=1).strip()
    return ""


def target_language(question: str, text: str) -> str:
    """'en' or 'zh': what the question asks for, else the other language from the text's."""
    if _TO_EN.search(question):
        return "en"
    if _TO_ZH.search(question):
        return "zh"
    return "en" if _CJK.search(text) else "zh"


LANGUAGE_NAMES = {"en": "English", "zh": "Simplified Chinese"}


class TranslateSkill:
    name = "translate"
    needs_frame = False
    calibrated = False

    SYSTEM = (
        "You are a translator between Simplified Chinese and English for someone wearing smart glasses. "
        "Translate the user's text faithfully and naturally. Reply with the translation only."
    )

    def __init__(self, backend: Callable[[], ChatBackend], reader: Callable[[], TextReader] | None = None) -> None:
        self._backend = backend
        self._reader = reader

    def _text(self, ask: Ask) -> tuple[str, str]:
        text = source_text(ask.question)
        if text:
            return text, "question"
        if ask.frame is not None and self._reader is not None:
            lines = self._reader().read(ask.frame.rgb)
            return "\n".join(ln.text for ln in lines), "frame"
        return "", "none"

    def run(self, ask: Ask) -> Answer:
        text, origin = self._text(ask)
        if not text:
            hint = ("I found no text in view to translate." if ask.frame is not None
                    else "What should I translate? Say 'translate' and the words, or point at the text.")
            return Answer(text=hint, skill=self.name, confidence=0.0, result={"source": "", "origin": origin})
        target = target_language(ask.question, text)
        result: dict[str, object] = {"source": text, "origin": origin, "target_language": target}
        try:
            backend = self._backend()
        except NotConfigured as exc:
            return self._escalate(HONEST_INTERIM, result | {"reason": exc.message})
        try:
            reply = backend.complete(
                [
                    system_message(self.SYSTEM),
                    user_message(f"Translate into {LANGUAGE_NAMES[target]}:\n{text}"),
                ],
                max_tokens=max(64, len(text) * 3),
                temperature=0.0,
            ).strip()
        except LookloopError as exc:
            return self._escalate(FAILED_INTERIM, result | {"reason": exc.message})
        if not reply:
            return self._escalate(FAILED_INTERIM, result | {"reason": "the backend sent an empty reply"})
        return Answer(
            text=reply,
            skill=self.name,
            # the model gives no usable probability; the answer stands as given
            confidence=1.0,
            model_version=f"{backend.kind}:{backend.model}",
            result=result | {"translation": reply},
        )

    def _escalate(self, text: str, result: dict[str, object]) -> Answer:
        return Answer(
            text=text,
            skill=self.name,
            confidence=0.0,
            decision=Decision.ESCALATE,
            model_version="human",
            result=result,
            policy="no-backend",
        )
