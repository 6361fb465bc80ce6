"""The skills on real photos, through the service: price, colour, remember/recall, notes, translate, describe."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import build_small_system, make_settings
from fake_openai import FakeOpenAIServer, fake_openai

from lookloop.catalog import GroceryDataset
from lookloop.domain import Answer, Ask, Decision, utcnow
from lookloop.imaging import decode_image
from lookloop.memory.store import MemoryStore, NoteStore, ago, delete_for_device
from lookloop.models.text import HashingTextEmbedder
from lookloop.skills.colour import ColourSkill, dominant_colours, name_colour
from lookloop.skills.memory import keyword_overlap, note_of
from lookloop.skills.notes import ExtractiveSummariser, split_sentences, textrank
from lookloop.skills.price import BarcodeReader, price_text
from lookloop.skills.registry import SKILL_NAMES
from lookloop.skills.translate import HONEST_INTERIM, source_text, target_language
from lookloop.system import Lookloop

# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path,
           grocery: GroceryDataset) -> Iterator[Lookloop]:
    tmp = tmp_path_factory.mktemp("skills")
    s: Lookloop = build_small_system(make_settings(tmp, data_dir, model_dir), grocery, per_class=8)
    yield s
    s.db.dispose()


def val_photos(grocery: GroceryDataset, label: str, n: int = 5) -> list[Path]:
    return [i.path for i in grocery.split("val") if i.label == label][:n]


def ask_of(path: Path, question: str = "what is this?", device_id: str = "dev-test") -> Ask:
    data = path.read_bytes()
    return Ask(question=question, frame=decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30),
               device_id=device_id)


@pytest.fixture(scope="module")
def zh_en() -> list[dict[str, str]]:
    from lookloop.config import get_settings

    path = get_settings().data_dir / "zh-en" / "tatoeba_cmn_hans.jsonl"
    pairs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[100:400]]
    return [p for p in pairs if 4 <= len(p["en"]) <= 60][:6]


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with fake_openai() as server:
        yield server


@pytest.fixture
def with_backends(system: Lookloop, fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    monkeypatch.setattr(system.settings, "chat_base_url", fake.base_url)
    monkeypatch.setattr(system.settings, "chat_model", "qwen2.5-7b-instruct")
    monkeypatch.setattr(system.settings, "vision_base_url", fake.base_url)
    monkeypatch.setattr(system.settings, "vision_model", "qwen2.5-vl-7b")
    monkeypatch.setattr(system.settings, "backend_timeout_s", 3.0)
    return fake


# -- registry ------------------------------------------------------------------------------------------


def test_every_intent_has_a_skill(system: Lookloop) -> None:
    # Every router intent has its skill; "human" takes the out-of-scope asks. What each skill must do:
    # test_conformance_skills.py.
    skills = system.skills()
    assert set(skills) == set(SKILL_NAMES) | {"human"}
    assert all(skill.name == name for name, skill in skills.items())


# -- price ---------------------------------------------------------------------------------------------


def test_price_of_a_val_photo(system: Lookloop, grocery: GroceryDataset) -> None:
    labels = []
    for path in val_photos(grocery, "Granny-Smith", 4):
        record = system.ask("how much is this?", path.read_bytes(), skill="price", device_id="dev-price")
        a = record.answer
        assert a.skill == "price" and a.result["via"] == "identify"
        labels.append(a.result["label"])
        if a.decision == Decision.ANSWER:
            item = system.find_item(a.result["label"])
            assert item is not None
            assert a.text == price_text(item)
        else:
            assert "asking a helper" in a.text
    assert Counter(labels).most_common(1)[0][0] == "Granny-Smith"
    item = system.find_item("Granny-Smith")
    assert item is not None and price_text(item) == "Granny Smith — 31.90 SEK per kg"


_L = ["0001101", "0011001", "0010011", "0111101", "0100011", "0110001", "0101111", "0111011", "0110111", "0001011"]
_G = ["".join("1" if c == "0" else "0" for c in code)[::-1] for code in _L]
_R = ["".join("1" if c == "0" else "0" for c in code) for code in _L]
_PARITY = ["LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL"]


def ean13(code12: str, module: int = 2, height: int = 90, quiet: int = 12) -> tuple[str, np.ndarray]:
    """Draws an EAN-13 barcode (white background, BGR) and returns its 13-digit code."""
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(code12)) % 10) % 10
    code = code12 + str(check)
    bits = "101" + "".join((_L if p == "L" else _G)[int(c)] for p, c in zip(_PARITY[int(code[0])], code[1:7],
                                                                               strict=True))
    bits += "01010" + "".join(_R[int(c)] for c in code[7:]) + "101"
    img = np.full((height + 30, (len(bits) + 2 * quiet) * module, 3), 255, np.uint8)
    for i, b in enumerate(bits):
        if b == "1":
            img[15 : 15 + height, (quiet + i) * module : (quiet + i + 1) * module] = 0
    return code, img


def test_price_by_barcode_beats_looks(system: Lookloop, grocery: GroceryDataset) -> None:
    banana = system.find_item("Banana")
    assert banana is not None
    code, label = ean13("735000000001")
    system.upsert_items([banana.__class__(**{**banana.__dict__, "barcode": code})])
    # a barcode sticker on a cucumber photo: the barcode says banana
    photo = cv2.imread(str(val_photos(grocery, "Cucumber", 1)[0]))
    h, w = label.shape[:2]
    photo = cv2.resize(photo, (max(photo.shape[1], w + 20), max(photo.shape[0], h + 20)))
    photo[10 : 10 + h, 10 : 10 + w] = label
    ok, buf = cv2.imencode(".png", photo)
    assert ok
    record = system.ask("what does this cost?", buf.tobytes(), skill="price", device_id="dev-price")
    assert record.answer.result["via"] == "barcode"
    assert record.answer.result["barcode"] == code
    assert record.answer.text == "Banana — 24.90 SEK per kg"
    assert record.answer.confidence == 1.0


def test_barcode_reader_reads_several_sizes() -> None:
    reader = BarcodeReader()
    for module in (2, 3, 4):
        code, label = ean13("400638133393", module=module)
        img = np.full((label.shape[0] + 200, label.shape[1] + 200, 3), 255, np.uint8)
        img[100:-100, 100:-100] = label
        found = reader.read(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        assert [b.value for b in found] == [code]
    assert reader.read(np.full((200, 200, 3), 255, np.uint8)) == []


# -- colour --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "colour"), [("Banana", "yellow"), ("Lime", "green"), ("Red-Bell-Pepper", "red"),
                                               ("Orange", "orange")])
def test_colour_of_real_photos(grocery: GroceryDataset, label: str, colour: str) -> None:
    skill = ColourSkill()
    said = [skill.run(ask_of(p, "what colour is this?")).result["colour"] for p in val_photos(grocery, label)]
    assert Counter(said).most_common(1)[0][0] == colour, said


def test_colour_through_the_service_in_chinese(system: Lookloop, grocery: GroceryDataset) -> None:
    path = val_photos(grocery, "Banana", 1)[0]
    record = system.ask("这是什么颜色？", path.read_bytes(), skill="colour")
    assert record.answer.text.startswith("黄色") and "yellow" not in record.answer.text.lower()
    english = system.ask("what colour is it?", path.read_bytes(), skill="colour")
    assert english.answer.text.startswith("Yellow") and "黄" not in english.answer.text  # one language only
    assert record.answer.result["colour_zh"] == "黄色"
    assert 0 < record.answer.confidence <= 1


def test_colour_names_and_centre_weighting() -> None:
    assert name_colour((250, 250, 250)) == "white"
    assert name_colour((10, 10, 10)) == "black"
    assert name_colour((128, 128, 128)) == "grey"
    assert name_colour((200, 20, 20)) == "red"
    assert name_colour((30, 60, 200)) == "blue"
    # a blue object in the middle of a big grey background is what the wearer looks at
    img = np.full((300, 300, 3), 128, np.uint8)
    img[75:225, 75:225] = (30, 60, 200)
    assert dominant_colours(img)[0].name == "blue"


# -- remember / recall ---------------------------------------------------------------------------------


def test_remember_then_recall_through_the_service(system: Lookloop, grocery: GroceryDataset) -> None:
    device = "dev-memory-1"
    parked_photo, keys_photo = val_photos(grocery, "Cucumber", 1)[0], val_photos(grocery, "Arla-Standard-Milk", 1)[0]
    r1 = system.ask("remember this is where I parked", parked_photo.read_bytes(), device_id=device, skill="remember")
    assert r1.answer.text.startswith("Remembered: this is where I parked")
    assert r1.answer.result["frame_sha"] == r1.frame_sha
    r2 = system.ask("remember that my keys are in the kitchen drawer", keys_photo.read_bytes(), device_id=device,
                    skill="remember")
    assert r2.answer.result["note"] == "my keys are in the kitchen drawer"

    back = system.ask("where did I park?", None, device_id=device, skill="recall").answer
    assert back.result["frame_sha"] == r1.frame_sha
    assert "parked" in back.result["note"]
    assert back.result["ago"] == "just now"
    assert back.text.startswith("Just now: this is where I parked")

    keys = system.ask("where are my keys?", None, device_id=device, skill="recall").answer
    assert keys.result["frame_sha"] == r2.frame_sha

    # visual search: a vague question with the same view finds the memory that looks like it
    seen = system.ask("have I been here before?", keys_photo.read_bytes(), device_id=device, skill="recall").answer
    assert seen.result["frame_sha"] == r2.frame_sha
    assert seen.result["matches"][0]["visual_score"] > 0.9

    # another wearer sees none of it
    other = system.ask("where did I park?", None, device_id="dev-memory-2", skill="recall").answer
    assert other.result["matches"] == [] and other.confidence == 0.0


def test_recall_says_how_long_ago(system: Lookloop) -> None:
    store = system.memory
    store.add(device_id="dev-memory-3", note="the bike is locked at the north gate",
              created_at=utcnow() - dt.timedelta(minutes=42))
    answer = system.ask("where is my bike?", None, device_id="dev-memory-3", skill="recall").answer
    assert answer.text.startswith("42 minutes ago: the bike is locked at the north gate")
    assert ago(utcnow() - dt.timedelta(hours=3, minutes=5)) == "3 hours ago"
    assert ago(utcnow() - dt.timedelta(days=1)) == "1 day ago"


def test_memory_needs_a_device_and_consent(system: Lookloop) -> None:
    anon = system.ask("remember this is where I parked", None, skill="remember").answer
    assert anon.result["refused"] == "anonymous"
    consent_mod = pytest.importorskip("lookloop.privacy.consent")
    consent_mod.ConsentService(system.db).set("dev-no-memory", memory=False)
    refused = system.ask("remember the code is 1234", None, device_id="dev-no-memory", skill="remember").answer
    assert refused.result["refused"] == "no-consent"
    assert system.memory.for_device("dev-no-memory") == []


def test_delete_for_device_removes_memories_and_notes(system: Lookloop) -> None:
    store, notes = MemoryStore(system.db), NoteStore(system.db)
    store.add(device_id="dev-gone", note="x")
    store.add(device_id="dev-stays", note="y")
    notes.start("dev-gone")
    assert delete_for_device(system.db, ["dev-gone"]) == 2
    assert store.for_device("dev-gone") == [] and len(store.for_device("dev-stays")) == 1
    assert notes.latest("dev-gone") is None


def test_memory_text_helpers() -> None:
    assert note_of("Remember that the car is on level P3.") == "the car is on level P3"
    assert note_of("记住：车停在三楼") == "车停在三楼"
    assert keyword_overlap("where did I park?", "this is where I parked") == 1.0


# -- notes ---------------------------------------------------------------------------------------------

MEETING = (
    "Okay let's start. The budget for the garden project is twelve thousand crowns. "
    "Yeah. Anna will order the seeds from the nursery on Monday. "
    "Hmm, right. The garden project needs the budget approved by the board before any seeds are ordered. "
    "Did you see the match yesterday? "
    "We agreed that the board meeting about the garden budget is on Friday at ten. "
    "Okay."
)


@pytest.mark.parametrize("embedder", ["tfidf", "hashing"])
def test_extractive_summary_keeps_the_central_sentences(embedder: str) -> None:
    summariser = ExtractiveSummariser(None if embedder == "tfidf" else HashingTextEmbedder)
    sentences = split_sentences(MEETING)
    summary = summariser.summarise(MEETING, max_sentences=2)
    assert len(summary.sentences) == 2
    assert all(s in sentences for s in summary.sentences)
    # in the order they were said, and about the garden budget rather than the match or the fillers
    assert [sentences.index(s) for s in summary.sentences] == sorted(sentences.index(s) for s in summary.sentences)
    assert all("garden" in s or "budget" in s for s in summary.sentences), summary.sentences


def test_textrank_prefers_the_hub() -> None:
    # three unrelated sentences and one that shares something with each of them
    v = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert int(np.argmax(textrank(v))) == 0


def test_notes_through_the_skill_and_the_asr_feed(system: Lookloop) -> None:
    device = "dev-notes-1"
    started = system.ask("take notes", None, device_id=device, skill="notes").answer
    note_id = started.result["note_id"]
    for line in MEETING.split(". "):
        system.notes.append(note_id, line)  # what the voice part's ASR does per utterance
    summary = system.ask("summarise my notes", None, device_id=device, skill="notes").answer
    assert summary.result["note_id"] == note_id
    assert summary.result["method"].startswith("extractive")
    assert "garden" in summary.text
    ended = system.ask("stop notes", None, device_id=device, skill="notes").answer
    assert ended.result["closed"] is True
    with pytest.raises(Exception, match="closed"):
        system.notes.append(note_id, "more")


def test_notes_summary_from_the_chat_backend(system: Lookloop, with_backends: FakeOpenAIServer) -> None:
    with_backends.canned = {"garden project": "- Garden budget 12,000 crowns; board decides Friday 10:00"}
    svc = system.notes
    note = svc.start("dev-notes-2")
    svc.append(note.id, MEETING)
    _, summary = svc.summarise(note.id)
    assert summary.text.startswith("- Garden budget")
    assert summary.method == "chat(qwen2.5-7b-instruct)"
    with_backends.mode = "error"
    svc.append(note.id, "One more thing about the garden.")
    _, fallback = svc.summarise(note.id)
    assert fallback.method.startswith("extractive") and "chat backend failed" in fallback.method


# -- translate -----------------------------------------------------------------------------------------


def test_translate_escalates_honestly_when_not_configured(system: Lookloop) -> None:
    record = system.ask("translate 我们试试看！", None, device_id="dev-tr", skill="translate")
    assert record.answer.decision == Decision.ESCALATE
    assert record.answer.text == HONEST_INTERIM
    assert record.outcome == "escalated"
    assert record.answer.result["source"] == "我们试试看！"
    assert record.answer.result["target_language"] == "en"


def test_translate_through_the_chat_backend(system: Lookloop, with_backends: FakeOpenAIServer,
                                            zh_en: list[dict[str, str]]) -> None:
    with_backends.canned = {p["zh"]: p["en"] for p in zh_en} | {p["en"]: p["zh"] for p in zh_en}
    for pair in zh_en[:3]:
        a = system.ask(f"translate {pair['zh']}", None, device_id="dev-tr", skill="translate").answer
        assert a.decision == Decision.ANSWER and a.text == pair["en"]
        assert "English" in with_backends.requests[-1]["messages"][-1]["content"]
        b = system.ask(f'how do you say "{pair["en"]}" in Chinese?', None, device_id="dev-tr",
                       skill="translate").answer
        assert b.text == pair["zh"]
        assert "Simplified Chinese" in with_backends.requests[-1]["messages"][-1]["content"]
    with_backends.mode = "error"
    failed = system.ask("translate 你好", None, device_id="dev-tr", skill="translate")
    assert failed.answer.decision == Decision.ESCALATE and "asking a helper" in failed.answer.text
    assert "HTTP 500" in failed.answer.result["reason"]


def test_translate_parses_questions() -> None:
    assert source_text("translate 我们试试看！") == "我们试试看！"
    assert source_text("translate this?") == ""
    assert source_text("how do you say thank you very much in Chinese?") == "thank you very much"
    assert source_text("翻译：谢谢你") == "谢谢你"
    assert source_text("translate this sign") == ""
    assert source_text("translate this: 小心地滑") == "小心地滑"
    assert target_language("translate this", "出口") == "en"
    assert target_language("translate 'exit'", "exit") == "zh"
    assert target_language("把这个翻译成英文", "出口") == "en"


# -- describe ------------------------------------------------------------------------------------------


def test_describe_falls_back_to_local_models_and_offers_a_human(system: Lookloop, grocery: GroceryDataset) -> None:
    path = val_photos(grocery, "Arla-Standard-Milk", 1)[0]
    a = system.ask("what's in front of me?", path.read_bytes(), skill="describe").answer
    assert a.result["via"] == "local" and a.result["offer_human"] is True
    assert a.text.startswith("I can't describe scenes: no vision model is set up.")  # said plainly, first
    assert "ask a helper" in a.text
    assert "no vision backend is configured" in a.result["vision_backend"]
    assert a.result["product"] is None or a.result["product"] in a.text
    if a.result["text"]:
        assert "Text:" in a.text


def test_describe_with_the_vision_backend(system: Lookloop, grocery: GroceryDataset,
                                          with_backends: FakeOpenAIServer) -> None:
    path = val_photos(grocery, "Banana", 1)[0]
    a = system.ask("describe the scene", path.read_bytes(), skill="describe").answer
    assert a.result["via"] == "vision-backend"
    assert a.text == "echo: describe the scene [1 image(s)]"
    sent = with_backends.requests[-1]
    assert sent["model"] == "qwen2.5-vl-7b"
    url = sent["messages"][-1]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    with_backends.mode, with_backends.delay_s = "slow", 5.0
    slow = system.ask("describe the scene", path.read_bytes(), skill="describe").answer
    assert slow.result["via"] == "local" and "within 3 s" in slow.result["vision_backend"]


def test_describe_counts_faces(system: Lookloop, grocery: GroceryDataset) -> None:
    """Without a vision backend, describe counts the faces in view: one on a portrait, none on a shop shelf."""
    from privacy_util import face_photo

    skill = system.skills()["describe"]
    portrait = face_photo()  # scikit-image's astronaut: a real portrait with one face
    shelf = val_photos(grocery, "Banana", 1)[0].read_bytes()
    counts = []
    for data in (portrait, shelf):
        a: Answer = skill.run(Ask("who is here?", frame=decode_image(data, max_bytes=1 << 30, max_pixels=1 << 30)))
        assert a.result["via"] == "local"
        counts.append(a.result["faces"])
    assert counts == [1, 0]
    assert "1 face in view" in skill.run(Ask("who is here?", frame=decode_image(
        portrait, max_bytes=1 << 30, max_pixels=1 << 30))).text


# -- HTTP ----------------------------------------------------------------------------------------------


def test_capabilities_and_notes_over_http(system: Lookloop) -> None:
    from fastapi.testclient import TestClient

    from lookloop.server.app import create_app

    with TestClient(create_app(system=system, warm=False)) as client:
        caps = client.get("/v1/capabilities").json()
        by_name = {s["name"]: s for s in caps["skills"]}
        assert by_name["translate"]["detail"] == "translation: not configured — asks go to a human"
        assert by_name["translate"]["fallback"] == "human"
        assert {b["role"]: b["configured"] for b in caps["backends"]} == {"chat": False, "vision": False}

        note = client.post("/v1/notes", json={"title": "garden"})
        assert note.status_code == 201, note.text
        nid = note.json()["id"]
        assert len(nid) == 32
        for line in MEETING.split(". "):
            assert client.post(f"/v1/notes/{nid}/text", json={"text": line}).status_code == 200
        assert client.post(f"/v1/notes/{nid}/text", json={"text": ""}).status_code == 422
        summary = client.post(f"/v1/notes/{nid}/summary", params={"close": "true"}).json()
        assert summary["closed"] is True and "garden" in summary["summary"]
        assert client.get(f"/v1/notes/{nid}").json()["text"].startswith("Okay let's start")
        assert client.get("/v1/notes/" + "0" * 32).status_code == 404
        assert client.get("/v1/memory").status_code == 401

