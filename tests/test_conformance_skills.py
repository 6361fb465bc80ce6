"""Skills: every skill through the same checks, each built from its own constructor with small fakes.

The fakes stand in for what the system would pass in (an image embedder, an OCR reader, a chat backend); the
identify model, the policy, the stores (on SQLite) and the photos (Grocery val) are real. Implementations are
skill configurations: translate and describe run both with a backend and without one (see conformance_util.py).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from conformance_util import cases

from lookloop.catalog import GroceryDataset
from lookloop.domain import HUD_LINE_CHARS, HUD_MAX_LINES, Answer, Ask, CatalogItem, Decision, Frame, hud_lines
from lookloop.errors import BadInput, LookloopError, NotConfigured
from lookloop.imaging import decode_image
from lookloop.loop.learner import IdentifyModel
from lookloop.loop.policies import FixedThreshold
from lookloop.memory.store import MemoryStore, NoteStore
from lookloop.models.backends import ChatBackend, Message
from lookloop.models.embedder import l2_normalise
from lookloop.models.ocr import TextLine
from lookloop.models.text import HashingTextEmbedder
from lookloop.skills.base import HandToHuman, Skill
from lookloop.skills.colour import ColourSkill
from lookloop.skills.describe import DescribeSkill
from lookloop.skills.identify import IdentifySkill
from lookloop.skills.memory import RecallSkill, RememberSkill
from lookloop.skills.notes import ExtractiveSummariser, NoteService, NotesSkill
from lookloop.skills.price import BarcodeReader, PriceSkill
from lookloop.skills.read import ReadSkill
from lookloop.skills.registry import SKILL_NAMES
from lookloop.skills.translate import TranslateSkill
from lookloop.store.db import Database

PRODUCTS = ("Banana", "Granny-Smith", "Arla-Standard-Milk")

# -- small fakes for what the system passes in ------------------------------------------------------------


class FakeImageEmbedder:
    """Colour statistics of the frame as an 8-d unit vector: deterministic, instant, tells products apart."""

    version = "fake-colour-stats"
    dim = 8
    image_size = 32

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        rows = []
        for img in images:
            small = cv2.resize(img, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
            px = small.reshape(-1, 3).astype(np.float32) / 255.0
            rows.append(np.concatenate([px.mean(axis=0), px.std(axis=0), [1.0, px.max() - px.min()]]))
        return l2_normalise(np.asarray(rows, dtype=np.float32).reshape(-1, self.dim))


class FakeReader:
    """An OCR reader that always sees the same price label."""

    version = "fake-ocr"

    def read(self, rgb: np.ndarray) -> list[TextLine]:
        box = ((0.0, 0.0), (100.0, 0.0), (100.0, 20.0), (0.0, 20.0))
        return [TextLine("FRESH MILK 1L", 0.96, box), TextLine("12.90 SEK", 0.91, box)]


class FakeChat:
    """A chat backend that always gives the same reply."""

    def __init__(self, reply: str, model: str = "fake-llm") -> None:
        self.reply = reply
        self._model = model

    @property
    def kind(self) -> str:
        return "fake"

    @property
    def model(self) -> str:
        return self._model

    def complete(self, messages: Sequence[Message], *, max_tokens: int = 512, temperature: float = 0.2) -> str:
        if not messages:
            raise ValueError("a chat needs at least one message")
        return self.reply

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 512,
               temperature: float = 0.2) -> Iterator[str]:
        yield self.complete(messages, max_tokens=max_tokens, temperature=temperature)


def no_backend() -> ChatBackend:
    raise NotConfigured("no chat backend is configured: set LOOKLOOP_CHAT_BASE_URL")


# -- the kit: what a skill's constructor is given --------------------------------------------------------


@dataclass
class Kit:
    db: Database
    photos: dict[str, Frame]
    embedder: FakeImageEmbedder = field(default_factory=FakeImageEmbedder)
    policy: FixedThreshold = field(default_factory=lambda: FixedThreshold(0.5))
    catalogue: dict[str, CatalogItem] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.memory = MemoryStore(self.db)
        self.notes = NoteService(NoteStore(self.db), ExtractiveSummariser(None))
        self.model = IdentifyModel(self.embedder.dim)
        # the model knows each product from one photo; the canonical asks show another photo of it
        for name in PRODUCTS:
            self.model.learn(self.embedder.embed([self.photos[f"{name}-0"].rgb]), [name], [f"{name}-0"])
        self.model.head_version = "prototypes"
        prices = {"Banana": 24.9, "Granny-Smith": 31.9, "Arla-Standard-Milk": 17.5}
        self.catalogue = {n: CatalogItem(id=n.lower(), name=n, price=p) for n, p in prices.items()}

    def identify(self) -> IdentifySkill:
        return IdentifySkill(lambda: self.embedder, lambda: self.model, self.catalogue.get)

    def predict(self, ask: Ask) -> tuple[Any, str]:
        return self.identify().predict(ask), f"{self.embedder.version}+{self.model.head_version}"

    def embed_image(self, rgb: np.ndarray) -> tuple[np.ndarray, str]:
        return self.embedder.embed([rgb])[0], self.embedder.version

    def consent(self, device_id: str) -> bool:
        return device_id != "dev-no-consent"


@dataclass(frozen=True)
class Impl:
    build: Callable[[Kit], Skill]
    question: str  # the ask this skill exists for
    with_frame: bool
    prepare: Callable[[Kit, str], None] = lambda kit, device: None  # state the ask expects, for one device


def _a_memory(kit: Kit, device: str) -> None:
    kit.memory.add(device_id=device, note="the bike is locked at the north gate")


MEETING = (
    "The budget for the garden project is twelve thousand crowns. Anna will order the seeds on Monday. "
    "Did you see the match yesterday? The board meets about the garden budget on Friday at ten."
)


def _a_note(kit: Kit, device: str) -> None:
    note = kit.notes.start(device)
    kit.notes.append(note.id, MEETING)


IMPLEMENTATIONS: dict[str, Impl] = {
    "identify": Impl(lambda k: k.identify(), "what is this?", True),
    "price": Impl(
        lambda k: PriceSkill(predict=k.predict, decide=k.policy.decide, find_item=k.catalogue.get,
                             items=lambda: list(k.catalogue.values()), barcodes=BarcodeReader()),
        "how much is this?", True,
    ),
    "read": Impl(lambda k: ReadSkill(FakeReader()), "read this", True),
    "colour": Impl(lambda k: ColourSkill(), "what colour is this?", True),
    "remember": Impl(
        lambda k: RememberSkill(k.memory, embed_image=k.embed_image, describe=lambda ask: "near a banana",
                                consent=k.consent),
        "remember this is where I parked", True,
    ),
    "recall": Impl(
        lambda k: RecallSkill(k.memory, text_embedder=HashingTextEmbedder, embed_image=k.embed_image,
                              consent=k.consent),
        "where is my bike?", False, _a_memory,
    ),
    "notes": Impl(lambda k: NotesSkill(k.notes), "summarise my notes", False, _a_note),
    "translate": Impl(
        lambda k: TranslateSkill(lambda: FakeChat("Let's give it a try!"), reader=FakeReader),
        "translate 我们试试看！", False,
    ),
    "translate-without-backend": Impl(lambda k: TranslateSkill(no_backend, reader=FakeReader),
                                      "translate 我们试试看！", False),
    "describe": Impl(
        lambda k: DescribeSkill(vision=lambda: FakeChat("A bunch of bananas on a shop shelf.", "fake-vl"),
                                predict=k.predict, decide=k.policy.decide, reader=FakeReader),
        "what's in front of me?", True,
    ),
    "describe-without-backend": Impl(
        lambda k: DescribeSkill(vision=no_backend, predict=k.predict, decide=k.policy.decide, reader=FakeReader),
        "what's in front of me?", True,
    ),
    "human": Impl(lambda k: HandToHuman(), "tell me a joke", False),
}

# No skill needs the composition root to be built.
SKIP = {
    "notes": {
        "text_fits_the_hud": "a summary is as long as the conversation needs: the HUD shows its first lines, the "
                             "whole summary stays with the note",
    },
}


# -- fixtures ------------------------------------------------------------------------------------------------


def _frame(rgb: np.ndarray) -> Frame:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    assert ok
    return decode_image(bytes(buf), max_bytes=1 << 30, max_pixels=1 << 30)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, grocery: GroceryDataset) -> Iterator[Kit]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('skills') / 'lookloop.db'}")
    db.migrate()
    val = grocery.split("val")
    photos: dict[str, Frame] = {}
    for name in PRODUCTS:
        for i, path in enumerate([x.path for x in val if x.label == name][:2]):
            photos[f"{name}-{i}"] = decode_image(path.read_bytes(), max_bytes=1 << 30, max_pixels=1 << 30)
    yield Kit(db, photos)
    db.dispose()


@dataclass
class Ctx:
    impl: Impl
    kit: Kit
    device: str

    def skill(self) -> Skill:
        return self.impl.build(self.kit)

    def ask(self, question: str | None = None, frame: Frame | None | bool = True, device: str | None = None) -> Ask:
        """The canonical ask (a real photo of a banana when the skill looks), with parts replaced."""
        if frame is True:
            frame = self.kit.photos["Banana-1"] if self.impl.with_frame else None
        return Ask(question=self.impl.question if question is None else question, frame=frame or None,
                   device_id=device or self.device)


def assert_valid_answer(answer: Answer, skill: Skill) -> None:
    assert isinstance(answer, Answer)
    assert answer.skill == skill.name
    assert isinstance(answer.text, str) and answer.text.strip()
    assert isinstance(answer.confidence, float | int) and math.isfinite(answer.confidence)
    assert 0.0 <= answer.confidence <= 1.0, answer.confidence
    assert answer.decision in (Decision.ANSWER, Decision.ESCALATE)
    assert isinstance(answer.model_version, str) and isinstance(answer.policy, str)
    scores = [c.score for c in answer.candidates]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    # the result is stored with the ask and sent over HTTP as it is
    json.dumps(answer.result)
    lines = answer.hud_lines
    assert 1 <= len(lines) <= HUD_MAX_LINES and all(len(ln) <= HUD_LINE_CHARS for ln in lines), lines
    if answer.decision == Decision.ESCALATE:
        assert "helper" in answer.text.lower(), "the wearer is told a person will answer"


# -- checks ------------------------------------------------------------------------------------------------


def check_named_like_its_intent(ctx: Ctx) -> None:
    skill = ctx.skill()
    assert skill.name in (*SKILL_NAMES, "human")
    assert isinstance(skill.needs_frame, bool) and isinstance(skill.calibrated, bool)


def check_answers_its_ask(ctx: Ctx) -> None:
    ctx.impl.prepare(ctx.kit, ctx.device)
    skill = ctx.skill()
    assert_valid_answer(skill.run(ctx.ask()), skill)


def check_text_fits_the_hud(ctx: Ctx) -> None:
    ctx.impl.prepare(ctx.kit, ctx.device)
    answer = ctx.skill().run(ctx.ask())
    # the whole answer shows on the glasses: nothing is cut off with an ellipsis
    wrapped = hud_lines(answer.text, max_lines=10_000)
    assert len(wrapped) <= HUD_MAX_LINES, wrapped
    assert answer.hud_lines == wrapped


def check_needs_frame_honoured(ctx: Ctx) -> None:
    ctx.impl.prepare(ctx.kit, ctx.device)
    skill = ctx.skill()
    no_frame = ctx.ask(frame=None)
    if skill.needs_frame:
        with pytest.raises(BadInput) as info:
            skill.run(no_frame)
        assert 400 <= info.value.status_code < 500 and "image" in info.value.message
    else:
        assert_valid_answer(skill.run(no_frame), skill)
        assert_valid_answer(skill.run(ctx.ask(frame=ctx.kit.photos["Granny-Smith-1"])), skill)


def _hostile_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        np.zeros((8, 8, 3), np.uint8),  # the smallest frame decoding accepts
        np.full((8, 4000, 3), 200, np.uint8),  # a sliver, as wide as the pixel budget allows
        np.full((4000, 8, 3), 30, np.uint8),
        np.full((64, 64, 3), 255, np.uint8),  # blank white
        rng.integers(0, 256, (120, 160, 3), dtype=np.uint8),  # sensor noise
    ]


HOSTILE_QUESTIONS = ["", "   \n\t ", "x" * 500, "\u202e\u0000 what?? 🤖", "这", "translate", "remember"]


def check_bad_input_is_a_lookloop_error(ctx: Ctx) -> None:
    ctx.impl.prepare(ctx.kit, ctx.device)
    skill = ctx.skill()
    asks = [ctx.ask(question=q) for q in HOSTILE_QUESTIONS]
    asks += [ctx.ask(frame=_frame(rgb)) for rgb in _hostile_frames()]
    for ask in asks:
        try:
            answer = skill.run(ask)
        except LookloopError as exc:
            assert exc.message
        else:
            assert_valid_answer(answer, skill)


def check_deterministic(ctx: Ctx) -> None:
    ctx.impl.prepare(ctx.kit, ctx.device)
    skill = ctx.skill()
    first, again = skill.run(ctx.ask()), skill.run(ctx.ask())
    assert (first.text, first.decision, first.confidence, first.model_version, first.candidates) == (
        again.text, again.decision, again.confidence, again.model_version, again.candidates)


def check_calibrated_skills_give_candidates(ctx: Ctx) -> None:
    # a calibrated skill's answer goes through the escalation policy, which reads its candidates
    skill = ctx.skill()
    answer = skill.run(ctx.ask())
    if skill.calibrated:
        assert answer.candidates and answer.candidates[0].label in ctx.kit.catalogue
        assert sum(c.score for c in answer.candidates) <= 1.0 + 1e-6
    else:
        assert not answer.candidates


def check_stores_nothing_for_an_anonymous_wearer(ctx: Ctx) -> None:
    skill = ctx.skill()
    for question in (ctx.impl.question, "remember the door code is 4711", "take notes"):
        try:
            assert_valid_answer(skill.run(ctx.ask(question=question, device="anonymous")), skill)
        except BadInput:
            pass
    assert ctx.kit.memory.for_device("anonymous") == []
    assert ctx.kit.notes.store.latest("anonymous") is None


CHECKS = [
    check_named_like_its_intent,
    check_answers_its_ask,
    check_text_fits_the_hud,
    check_needs_frame_honoured,
    check_bad_input_is_a_lookloop_error,
    check_deterministic,
    check_calibrated_skills_give_candidates,
    check_stores_nothing_for_an_anonymous_wearer,
]


@pytest.mark.parametrize(("impl", "check"), cases(list(IMPLEMENTATIONS), CHECKS, SKIP))
def test_skill(impl: str, check: Callable[[Ctx], None], kit: Kit, request: pytest.FixtureRequest) -> None:
    check(Ctx(IMPLEMENTATIONS[impl], kit, device=f"dev-{request.node.callspec.id}"))


def test_every_intent_has_a_checked_skill(kit: Kit) -> None:
    names = {impl.build(kit).name for impl in IMPLEMENTATIONS.values()}
    assert names == {*SKILL_NAMES, "human"}
