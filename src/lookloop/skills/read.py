"""read: "read this" → the scene text in reading order (Chinese and English)."""

from __future__ import annotations

from lookloop.domain import Answer, Ask
from lookloop.errors import BadInput
from lookloop.models.ocr import TextReader, join_rows


class ReadSkill:
    name = "read"
    needs_frame = True
    calibrated = False

    def __init__(self, reader: TextReader) -> None:
        self.reader = reader

    def run(self, ask: Ask) -> Answer:
        if ask.frame is None:
            raise BadInput("read needs an image")
        lines = self.reader.read(ask.frame.rgb)
        if not lines:
            return Answer(
                text="I can't find any text here. Move closer or hold it steady.",
                skill=self.name,
                confidence=0.0,
                model_version=self.reader.version,
                result={"lines": []},
            )
        conf = sum(ln.score for ln in lines) / len(lines)
        return Answer(
            text="\n".join(join_rows(lines)),
            skill=self.name,
            confidence=round(conf, 4),
            model_version=self.reader.version,
            result={
                "lines": [
                    {"text": ln.text, "score": round(ln.score, 4), "box": [list(p) for p in ln.box]} for ln in lines
                ]
            },
        )
