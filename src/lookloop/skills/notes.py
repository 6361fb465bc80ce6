"""notes: a conversation streamed to text (typed or from speech recognition), then summarised.

The summary is extractive on the embedded default (TextRank over sentence embeddings; TF-IDF vectors when no
sentence embedder loads) and an LLM's when a chat backend is configured (extractive again if it fails).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lookloop.domain import Answer, Ask
from lookloop.errors import BadInput, LookloopError, NotConfigured
from lookloop.memory.store import NoteSession, NoteStore
from lookloop.models.backends import ChatBackend, system_message, user_message
from lookloop.models.text import TextEmbedder

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])|\n+")
_SUMMARY_WORDS = re.compile(
    r"\b(summar\w*|recap|stop|end|finish|wrap(?:\s+it)?\s+up|what (?:was|did we) (?:said|say|discuss))\b"
    r"|总结|概括|结束|停止",
    re.I,
)
_STOP_WORDS = re.compile(r"\b(stop|end|finish|wrap)\b|结束|停止", re.I)
# A new session starts only when asked for; anything else said while one is open is dictation.
_START_WORDS = re.compile(
    r"\b(take|taking|start|begin|keep|make)\b.{0,20}\bnotes?\b|\bnote (this )?down\b|\bjot\b|\bwrite down\b"
    r"|\btranscribe\b|\brecord the\b|记笔记|开始记录",
    re.I,
)


def split_sentences(text: str, max_words: int = 40) -> list[str]:
    """Sentences by punctuation and line breaks; unpunctuated runs are cut every ``max_words`` words."""
    out: list[str] = []
    for piece in _SENTENCE_END.split(text):
        piece = piece.strip()
        if not piece:
            continue
        words = piece.split()
        if len(words) <= max_words:
            out.append(piece)
        else:
            out.extend(" ".join(words[i : i + max_words]) for i in range(0, len(words), max_words))
    return out


@dataclass(frozen=True)
class Summary:
    text: str
    method: str
    sentences: tuple[str, ...] = ()


@runtime_checkable
class Summariser(Protocol):
    @property
    def name(self) -> str: ...

    def summarise(self, text: str, max_sentences: int = 5) -> Summary: ...


def _tfidf(sentences: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer  # slow to import: loaded on first use

    # character n-grams cover Chinese (no spaces) and English alike
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
    x = vec.fit_transform(sentences).toarray().astype(np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def textrank(vectors: np.ndarray, damping: float = 0.85, iterations: int = 60) -> np.ndarray:
    """PageRank over the cosine-similarity graph of unit-norm sentence vectors."""
    n = len(vectors)
    sim = np.clip(vectors @ vectors.T, 0.0, None)
    np.fill_diagonal(sim, 0.0)
    rows = sim.sum(axis=1, keepdims=True)
    trans = np.where(rows > 0, sim / np.maximum(rows, 1e-12), 1.0 / n)
    score = np.full(n, 1.0 / n)
    for _ in range(iterations):
        new = (1 - damping) / n + damping * trans.T @ score
        if np.abs(new - score).sum() < 1e-8:
            score = new
            break
        score = new
    return np.asarray(score)


class ExtractiveSummariser:
    """The most central sentences (TextRank), kept in the order they were said."""

    def __init__(self, embedder: Callable[[], TextEmbedder | None] | None = None) -> None:
        self._embedder = embedder

    @property
    def name(self) -> str:
        return "extractive-textrank"

    def summarise(self, text: str, max_sentences: int = 5) -> Summary:
        sentences = split_sentences(text)
        if not sentences:
            return Summary("", self.name)
        k = max(1, min(max_sentences, len(sentences)))
        if len(sentences) <= k:
            return Summary(" ".join(sentences), self.name, tuple(sentences))
        embedder = self._embedder() if self._embedder else None
        method = self.name
        if embedder is not None:
            vectors = embedder.embed(sentences)
            method += f"({embedder.version})"
        else:
            vectors = _tfidf(sentences)
            method += "(tfidf)"
        scores = textrank(vectors)
        # a tiny preference for longer sentences: fillers like "yeah." are central but say nothing
        lengths = np.array([min(len(s.split()), 25) for s in sentences], dtype=np.float64)
        scores = scores * (0.5 + lengths / lengths.max())
        chosen = sorted(np.argsort(-scores)[:k].tolist())
        picked = tuple(sentences[i] for i in chosen)
        return Summary(" ".join(picked), method, picked)


class ChatSummariser:
    """The chat backend's summary; falls back to the extractive one (and says so) when the backend fails."""

    PROMPT = (
        "You summarise conversations for someone wearing smart glasses. Reply with at most {n} short bullet "
        "points covering decisions, facts, names, numbers and to-dos, in the conversation's language. "
        "Reply with the bullets only."
    )

    def __init__(self, backend: Callable[[], ChatBackend], fallback: ExtractiveSummariser) -> None:
        self._backend = backend
        self._fallback = fallback

    @property
    def name(self) -> str:
        return "chat"

    def summarise(self, text: str, max_sentences: int = 5) -> Summary:
        if not text.strip():
            return Summary("", self.name)
        try:
            backend = self._backend()
            reply = backend.complete(
                [system_message(self.PROMPT.format(n=max_sentences)), user_message(text[-24_000:])],
                max_tokens=400,
            ).strip()
            if reply:
                return Summary(reply, f"chat({backend.model})", tuple(ln for ln in reply.splitlines() if ln))
            reason = "empty reply"
        except LookloopError as exc:
            reason = exc.message
        log.warning("chat summary failed (%s); using the extractive summary", reason)
        fb = self._fallback.summarise(text, max_sentences)
        return Summary(fb.text, f"{fb.method}; chat backend failed", fb.sentences)


class NoteService:
    """Note sessions: start, append text (from the ASR or typed), summarise."""

    def __init__(
        self,
        store: NoteStore,
        extractive: ExtractiveSummariser,
        chat: Callable[[], ChatBackend] | None = None,
    ) -> None:
        self.store = store
        self.extractive = extractive
        self._chat = chat

    def summariser(self) -> Summariser:
        if self._chat is not None:
            try:
                self._chat()
            except NotConfigured:
                return self.extractive
            return ChatSummariser(self._chat, self.extractive)
        return self.extractive

    def start(self, device_id: str, title: str = "") -> NoteSession:
        return self.store.start(device_id, title=title)

    def append(self, note_id: str, text: str) -> NoteSession:
        return self.store.append(note_id, text)

    def is_dictating(self, device_id: str) -> bool:
        """Whether the device has a note session open: what it says then is dictation, for no one else."""
        return device_id != "anonymous" and self.store.latest_open(device_id) is not None

    def get(self, note_id: str) -> NoteSession:
        return self.store.get(note_id)

    def delete(self, note_id: str) -> None:
        self.store.delete(note_id)

    def summarise(self, note_id: str, *, close: bool = False, max_sentences: int = 5) -> tuple[NoteSession, Summary]:
        note = self.store.get(note_id)
        if note.summary is not None and not close:
            return note, Summary(note.summary, note.summary_method)
        summary = self.summariser().summarise(note.text, max_sentences)
        return self.store.save_summary(note_id, summary.text, summary.method, close=close), summary


class NotesSkill:
    """'take notes' starts a session for the wearer's device; 'summarise my notes' / 'stop notes' sums it up."""

    name = "notes"
    needs_frame = False
    calibrated = False

    def __init__(self, service: NoteService) -> None:
        self.service = service

    def run(self, ask: Ask) -> Answer:
        if ask.device_id == "anonymous":
            return Answer(
                text="Notes need your own glasses: connect with your device token first.",
                skill=self.name,
                confidence=1.0,
                result={"refused": "anonymous"},
            )
        store = self.service.store
        if _SUMMARY_WORDS.search(ask.question):
            note = store.latest_open(ask.device_id) or store.latest(ask.device_id)
            if note is None:
                return Answer(
                    text="There are no notes yet. Say 'take notes' to start.",
                    skill=self.name,
                    confidence=1.0,
                    result={},
                )
            if not note.text.strip():
                return Answer(text="Nothing was noted yet.", skill=self.name, confidence=1.0,
                              result={"note_id": note.id})
            close = bool(_STOP_WORDS.search(ask.question))
            note, summary = self.service.summarise(note.id, close=close)
            return Answer(
                text=summary.text,
                skill=self.name,
                confidence=1.0,
                model_version=summary.method,
                result={"note_id": note.id, "summary": summary.text, "method": summary.method, "closed": close},
            )
        open_note = store.latest_open(ask.device_id)
        if open_note is not None and not _START_WORDS.search(ask.question):
            # Dictation stays with the wearer: transcribed into the note, never sent to a person.
            self.service.append(open_note.id, ask.question)
            return Answer(text="Noted.", skill=self.name, confidence=1.0,
                          result={"note_id": open_note.id, "appended": True})
        if open_note is not None:
            self.service.summarise(open_note.id, close=True)
        note = self.service.start(ask.device_id, title=ask.question[:200])
        return Answer(
            text="Taking notes. Say 'summarise my notes' when you are done.",
            skill=self.name,
            confidence=1.0,
            result={"note_id": note.id, "started": True},
        )


def check_max_sentences(n: int) -> int:
    if not 1 <= n <= 20:
        raise BadInput("max_sentences must lie between 1 and 20")
    return n
