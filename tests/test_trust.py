"""Label trust and provenance: who may label, whose answers a label changes, and how new classes are approved."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lookloop.catalog import GroceryDataset
from lookloop.domain import AskRecord, class_name, display
from lookloop.errors import Unauthorized
from lookloop.humans.accounts import Principal
from lookloop.humans.queue import QueueItem
from lookloop.system import Lookloop
from tests.conftest import SMALL_CLASSES, small_val
from tests.humans_util import bearer, credentials, unknown_photo


def _reviewer(system: Lookloop, name: str, *, gold_right: int = 0, role: str = "reviewer") -> Principal:
    """A reviewer who answered ``gold_right`` gold items right (5 make one trusted under the default settings)."""
    info, _ = system.humans.accounts.add_account(name, role)
    who = Principal("account", role, account_id=info.id, name=name)
    queue = system.humans.queue
    for i in range(gold_right):
        gold = queue.add_gold(question=f"gold {name} {i}", frame_sha=None, answer="Banana")
        queue.submit(gold.id, who, "answer", "banana")
    return who


def _wearer(system: Lookloop, name: str) -> str:
    info, _ = system.humans.accounts.add_device(name)
    return info.id


def _photo(grocery: GroceryDataset, label: str = "Banana") -> bytes:
    return Path(next(p for p in small_val(grocery) if p.label == label).path).read_bytes()


def _label(record_or_system: Lookloop, device: str, data: bytes) -> str:
    return str(record_or_system.ask("what is this?", data, device_id=device).answer.result["label"])


def _asked(system: Lookloop, grocery: GroceryDataset) -> tuple[bytes, str, str, AskRecord, str, str]:
    """Wearers ann and bob; ann's ask about a photo: (photo, ann, bob, ask, its answer, another product)."""
    data = _photo(grocery)
    ann, bob = _wearer(system, "ann"), _wearer(system, "bob")
    first = system.ask("what is this?", data, device_id=ann)
    before = str(first.answer.result["label"])
    return data, ann, bob, first, before, next(c for c in SMALL_CLASSES if c != before)


def _confirm_item(system: Lookloop, who: Principal) -> QueueItem:
    item = system.humans.queue.next(who)
    while item is not None and item.kind == "gold":  # a reviewer not trusted yet meets gold items first
        system.humans.queue.skip(item.id, who)
        item = system.humans.queue.next(who)
    assert item is not None and item.kind == "confirm"
    return item


def test_a_wearers_correction_changes_only_their_answers_until_a_trusted_reviewer_confirms(
        small_system: Lookloop, grocery: GroceryDataset) -> None:
    system = small_system
    data, ann, bob, first, before, wrong = _asked(system, grocery)
    system.humans.feedback.give(first.id, "wrong", device_id=ann, correction=display(wrong))
    assert _label(system, ann, data) == wrong  # the wearer's own next answer, at once
    assert _label(system, bob, data) == before  # nobody else's
    labels = system.labels.of_ask(first.id)
    assert [(x.value, x.source, x.status, x.trust) for x in labels] == [(wrong, "wearer", "personal", 0.0)]

    # The correction waits in the review queue; a trusted reviewer agrees: now every wearer's answer changes.
    rita = _reviewer(system, "rita", gold_right=5)
    item = _confirm_item(system, rita)
    assert item.ask_id == first.id and item.frame_sha == first.frame_sha
    system.humans.queue.submit(item.id, rita, "answer", wrong)
    assert _label(system, bob, data) == wrong
    statuses = {(x.source, x.status) for x in system.labels.of_ask(first.id)}
    assert statuses == {("wearer", "applied"), ("reviewer", "applied")}
    assert system.get_ask(first.id).outcome == "corrected"  # the confirmation leaves the episode as it ended


def test_a_trusted_reviewer_who_disagrees_keeps_the_correction_personal(small_system: Lookloop,
                                                                       grocery: GroceryDataset) -> None:
    system = small_system
    data, ann, bob, first, before, wrong = _asked(system, grocery)
    system.humans.feedback.give(first.id, "wrong", device_id=ann, correction=wrong)
    rita = _reviewer(system, "rita", gold_right=5)
    system.humans.queue.submit(_confirm_item(system, rita).id, rita, "answer", before)
    assert _label(system, bob, data) == before
    assert _label(system, ann, data) == wrong  # their own memory is theirs
    assert {(x.source, x.status) for x in system.labels.of_ask(first.id)} == {
        ("wearer", "rejected"), ("reviewer", "applied")}


def test_a_reviewer_without_enough_gold_needs_a_second_agreeing_reviewer(small_system: Lookloop,
                                                                         grocery: GroceryDataset) -> None:
    system = small_system
    data, ann, bob, first, before, wrong = _asked(system, grocery)
    new, poor = _reviewer(system, "nina", gold_right=1), _reviewer(system, "paul", gold_right=5)
    # paul answered his gold wrong: below the accuracy bar however many he answered.
    system.humans.queue.submit(system.humans.queue.add_gold(question="g", frame_sha=None, answer="Kiwi").id,
                               poor, "answer", "Banana")
    assert system.labels.trust.trust_of("paul").trusted is False  # 5 of 6 right: 83% < 90%
    assert system.labels.trust.trust_of("nina").trusted is False  # too few gold answers
    system.humans.queue.enqueue_ask(system.get_ask(first.id))
    item = system.humans.queue.next(new)
    assert item is not None and item.kind == "ask"
    system.humans.queue.submit(item.id, new, "answer", wrong)
    assert system.get_ask(first.id).final_answer is not None  # the wearer had a person's answer
    assert _label(system, bob, data) == before  # but nobody else's answer changed
    [pending] = system.labels.of_ask(first.id)
    assert (pending.source, pending.status, pending.trust) == ("reviewer", "pending", 1.0)  # nina: 1 of 1 right
    # The same reviewer again is no consensus; a second, agreeing one is.
    system.humans.queue.submit(_confirm_item(system, poor).id, poor, "answer", display(wrong))
    assert _label(system, bob, data) == wrong
    sources = [(x.source, x.status) for x in system.labels.of_ask(first.id)]
    assert sources == [("reviewer", "applied"), ("consensus", "applied")]


def test_operator_and_library_labels_apply_at_once(small_system: Lookloop, grocery: GroceryDataset) -> None:
    system = small_system
    data = _photo(grocery, "Cucumber")
    first = system.ask("what is this?", data)
    wrong = next(c for c in SMALL_CLASSES if c != first.answer.result["label"])
    system.add_label(first.id, wrong, source="operator", author="otto")
    assert _label(system, "anonymous", data) == wrong
    with pytest.raises(Unauthorized):
        system.add_label(first.id, wrong, source="anonymous")
    with pytest.raises(Unauthorized):
        system.add_label(first.id, wrong, source="wearer")  # an anonymous ask has no wearer


def test_a_new_class_is_learnt_only_after_an_operator_approves_it(small_system: Lookloop,
                                                                  grocery: GroceryDataset) -> None:
    system = small_system
    photo = unknown_photo(system, grocery)
    data = photo.path.read_bytes()
    rita = _reviewer(system, "rita", gold_right=5)
    record = system.ask("what is this?", data, device_id=_wearer(system, "ann"))
    system.humans.queue.enqueue_ask(record)
    item = system.humans.queue.next(rita)
    assert item is not None
    system.humans.queue.submit(item.id, rita, "answer", "dragon  fruit")  # "not in the catalogue" + a name
    assert system.get_ask(record.id).final_answer == "Dragon Fruit"  # the wearer hears the person's answer
    [label] = system.labels.of_ask(record.id)
    assert (label.value, label.status) == ("Dragon-Fruit", "proposal")
    assert _label(system, "anonymous", data) != "Dragon-Fruit"  # not a class without an operator
    assert "Dragon-Fruit" not in system.identify_model.labels()
    [proposal] = system.labels.proposals()
    assert (proposal.name, proposal.display_name, proposal.answers, proposal.authors) == (
        "Dragon-Fruit", "Dragon Fruit", 1, ("rita",))
    assert proposal.example_label_ids == (label.id,)

    done = system.labels.approve("Dragon fruit", price=29.9)
    assert (done.item.name, done.item.price, done.labels, done.learnt) == ("Dragon-Fruit", 29.9, 1, 1)
    again = system.ask("what is this?", data)
    assert again.answer.result["label"] == "Dragon-Fruit"
    assert again.answer.text.startswith("Dragon Fruit — 29.90 SEK") or "Dragon Fruit" in again.answer.text
    assert system.labels.proposals() == []
    assert [x.status for x in system.labels.of_ask(record.id)] == ["applied"]
    # The next training run learns the class in the head too.
    data_set = system.serving.labelled_set()
    assert "Dragon-Fruit" in data_set.labels


def test_class_names_have_one_form(small_system: Lookloop) -> None:
    assert class_name("regular tomato") == "Regular-Tomato" == class_name("Regular_Tomato")
    assert display(class_name("  dragon   fruit ")) == "Dragon Fruit"
    item = small_system.find_item("Granny Smith")
    assert item is not None and item.name == "Granny-Smith" and item.display_name == "Granny Smith"


# -- over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture
def client(small_system: Lookloop) -> Iterator[TestClient]:
    from lookloop.server.app import create_app

    with TestClient(create_app(system=small_system, warm=False)) as c:
        yield c


def test_anonymous_callers_cannot_label(client: TestClient, small_system: Lookloop, grocery: GroceryDataset) -> None:
    data = _photo(grocery)
    ask = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("a.jpg", data, "image/jpeg")})
    assert ask.status_code == 200, ask.text
    ask_id = ask.json()["id"]
    r = client.post(f"/v1/asks/{ask_id}/labels", json={"value": "Cucumber"})
    assert r.status_code == 401 and "anonymous callers cannot teach the model" in r.json()["detail"]
    r = client.post(f"/v1/asks/{ask_id}/feedback", json={"verdict": "wrong", "correction": "Cucumber"})
    assert r.status_code == 401 and "anonymous callers cannot give labels" in r.json()["detail"]
    device, _, operator = credentials(client, small_system)
    r = client.post(f"/v1/asks/{ask_id}/labels", json={"value": "Cucumber"}, headers=bearer(device))
    assert r.status_code == 403  # an anonymous ask has no wearer to correct it
    assert small_system.labels.of_ask(ask_id) == []
    assert client.get(f"/v1/asks/{ask_id}", ).json()["answer"]["result"]["label"] != "Cucumber"


def test_labels_show_their_provenance(client: TestClient, small_system: Lookloop, grocery: GroceryDataset) -> None:
    device, reviewer, operator = credentials(client, small_system)
    data = _photo(grocery)
    ask = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("a.jpg", data, "image/jpeg")},
                      headers=bearer(device)).json()
    r = client.post(f"/v1/asks/{ask['id']}/labels", json={"value": "cucumber"}, headers=bearer(device))
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/asks/{ask['id']}/labels", json={"value": "Banana", "source": "wearer"},
                    headers=bearer(reviewer))
    assert r.status_code == 404  # a reviewer labels only the asks they hold
    r = client.post(f"/v1/asks/{ask['id']}/labels", json={"value": "Banana"}, headers=bearer(operator))
    assert r.status_code == 200, r.text
    seen = client.get(f"/v1/asks/{ask['id']}/labels", headers=bearer(operator)).json()
    assert [(x["value"], x["display"], x["source"], x["status"], x["trust"]) for x in seen] == [
        ("Cucumber", "Cucumber", "wearer", "rejected", 0.0), ("Banana", "Banana", "operator", "applied", 1.0)]
    assert seen[0]["author"].startswith("dev-") and seen[1]["author"] == "otto"
    mine = client.get(f"/v1/asks/{ask['id']}/labels", headers=bearer(device)).json()
    assert [x["author"] for x in mine] == [seen[0]["author"], ""]  # a wearer does not see reviewers' names
    assert client.get(f"/v1/asks/{ask['id']}/labels").status_code == 401


def test_operators_approve_or_reject_proposals_over_http(client: TestClient, small_system: Lookloop,
                                                        grocery: GroceryDataset) -> None:
    device, reviewer, operator = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    ids = []
    for name in ("star fruit", "Star-Fruit", "mystery thing"):
        ask = client.post("/v1/asks", data={"question": "what is this?"}, headers=bearer(device),
                          files={"image": ("a.jpg", photo.path.read_bytes(), "image/jpeg")}).json()
        r = client.post(f"/v1/asks/{ask['id']}/labels", json={"value": name}, headers=bearer(operator))
        assert r.status_code == 200, r.text
        ids.append(ask["id"])
    assert client.get("/v1/operators/proposals", headers=bearer(reviewer)).status_code == 403
    listed = client.get("/v1/operators/proposals", headers=bearer(operator)).json()
    assert [(p["name"], p["answers"]) for p in listed] == [("Star-Fruit", 2), ("Mystery-Thing", 1)]
    frame = client.get(listed[0]["example_frames"][0], headers=bearer(operator))
    assert frame.status_code == 200 and frame.content[:3] == b"\xff\xd8\xff"
    r = client.post("/v1/operators/proposals/approve", json={"name": "star fruit", "price": 12.5},
                    headers=bearer(operator))
    assert r.status_code == 201, r.text
    assert r.json()["item"]["name"] == "Star-Fruit" and r.json()["labels"] == 2
    assert client.post("/v1/operators/proposals/approve", json={"name": "Star fruit"},
                       headers=bearer(operator)).status_code == 409
    r = client.post("/v1/operators/proposals/reject", json={"name": "Mystery thing"}, headers=bearer(operator))
    assert r.status_code == 200 and r.json()["rejected"] == 1
    assert client.post("/v1/operators/proposals/reject", json={"name": "nothing such"},
                       headers=bearer(operator)).status_code == 404
    assert client.get("/v1/operators/proposals", headers=bearer(operator)).json() == []
    assert small_system.find_item("star fruit") is not None


def test_exports_show_each_labels_provenance(small_system: Lookloop, grocery: GroceryDataset) -> None:
    from lookloop.exports.episodes import load_episodes, pseudonym

    system = small_system
    ann = _wearer(system, "ann")
    first = system.ask("what is this?", _photo(grocery), device_id=ann)
    wrong = next(c for c in SMALL_CLASSES if c != first.answer.result["label"])
    system.humans.feedback.give(first.id, "wrong", device_id=ann, correction=wrong)
    [episode] = [e for e in load_episodes(system) if e.ask_id == first.id]
    out = episode.to_json()
    assert out["labels"][0]["source"] == "wearer" and out["labels"][0]["author"] == pseudonym(ann)
    assert (out["labels"][0]["trust"], out["labels"][0]["status"]) == (0.0, "personal")
    assert (out["lineage"]["label_status"], out["lineage"]["label_trust"]) == ("personal", 0.0)


def test_across_workers_only_labels_that_teach_everyone_travel(tmp_path: Path, data_dir: Path, model_dir: Path,
                                                               grocery: GroceryDataset) -> None:
    """Two workers on one database: a wearer's personal correction on one never reaches the other's shared
    model; a trusted label and a new catalogue item do."""
    from tests.conftest import make_settings, two_workers

    with two_workers(make_settings(tmp_path, data_dir, model_dir), grocery) as (a, b):
        data = _photo(grocery)
        ann, bob = _wearer(a, "ann"), _wearer(a, "bob")
        first = a.ask("what is this?", data, device_id=ann)
        before = str(first.answer.result["label"])
        wrong = next(c for c in SMALL_CLASSES if c != before)
        a.humans.feedback.give(first.id, "wrong", device_id=ann, correction=display(wrong))
        assert _label(a, ann, data) == wrong
        assert _label(b, bob, data) == before  # the personal label stayed off the other worker's shared model

        rita = _reviewer(a, "rita", gold_right=5)
        item = _confirm_item(a, rita)
        a.humans.queue.submit(item.id, rita, "answer", wrong)
        assert _label(b, bob, data) == wrong  # confirmed by a trusted reviewer: the other worker learnt it

        a.upsert_items([replace(a.catalogue.items()[0], id="dragon-fruit", name="Dragon-Fruit", images=())])
        assert b.catalogue.find("dragon fruit") is not None  # the other worker's catalogue is not stale


# -- earning trust: the demo's gold items, gold first, what became of an answer ----------------------------------


def _gold_answer(system: Lookloop, item_id: str) -> str:
    from lookloop.humans.tables import ReviewItemRow

    with system.db.session() as s:
        row = s.get(ReviewItemRow, item_id)
        assert row is not None and row.kind == "gold"
        return str(row.gold_answer)


def test_the_demo_starts_with_gold_items_once(small_system: Lookloop) -> None:
    from lookloop.cli.serve import DEMO_GOLD, ensure_demo_gold

    system = small_system
    assert ensure_demo_gold(system) == DEMO_GOLD
    assert ensure_demo_gold(system) == 0  # a restart adds nothing
    assert system.humans.queue.counts()["gold"] == DEMO_GOLD
    rita = _reviewer(system, "rita")
    item = system.humans.queue.next(rita)
    assert item is not None and item.kind == "gold" and item.frame_sha
    assert item.candidates and item.ai_answer  # the AI's guess beside it, like any item
    assert system.humans.queue.frame_bytes(item)[:2] == b"\xff\xd8"  # the redacted frame, as any reviewer sees it
    info = system.privacy.info(item.frame_sha)
    assert info is not None and info.stage == "full" and not info.original_kept
    assert system.find_item(_gold_answer(system, item.id)) is not None


def test_an_untrusted_reviewer_meets_gold_first_and_once_trusted_their_answer_applies_at_once(
        small_system: Lookloop, grocery: GroceryDataset) -> None:
    from lookloop.cli.serve import ensure_demo_gold
    from lookloop.server.app import create_app

    system = small_system
    ensure_demo_gold(system)
    data = _photo(grocery)
    ann, bob = _wearer(system, "ann"), _wearer(system, "bob")
    waiting = system.ask("what is this?", data, device_id=ann)
    before = str(waiting.answer.result["label"])
    wrong = next(c for c in SMALL_CLASSES if c != before)
    system.humans.queue.enqueue_ask(system.get_ask(waiting.id), live=False)  # an item waiting in the queue
    with TestClient(create_app(system=system, warm=False)) as client:
        system.humans.accounts.add_account("gina", "reviewer", "reviewer-pass")
        token = client.post("/v1/auth/login", json={"username": "gina", "password": "reviewer-pass"}).json()["token"]
        h = bearer(token)
        [me] = client.get("/v1/review/stats", headers=h).json()  # before any answer
        assert (me["trusted"], me["gold_to_go"], me["gold_answered"]) == (False, 5, 0)
        for to_go in (4, 3, 2, 1, 0):
            item = client.post("/v1/review/next", headers=h).json()
            assert system.humans.queue.get(item["id"]).kind == "gold"  # gold first, though the ask waits
            r = client.post(f"/v1/review/items/{item['id']}/answer", headers=h,
                            json={"action": "answer", "value": _gold_answer(system, item["id"])})
            assert r.status_code == 200, r.text
            assert r.json()["label"] == "pending"  # what an untrusted reviewer's answer to any item becomes
            [me] = client.get("/v1/review/stats", headers=h).json()
            assert (me["gold_to_go"], me["trusted"]) == (to_go, to_go == 0)
        assert me["gold_accuracy"] == 1.0 and me["min_gold_accuracy"] == 0.9
        item = client.post("/v1/review/next", headers=h).json()
        assert system.humans.queue.get(item["id"]).ask_id == waiting.id  # trusted: no more gold first
        r = client.post(f"/v1/review/items/{item['id']}/answer", headers=h, json={"action": "answer", "value": wrong})
        assert (r.json()["status"], r.json()["label"]) == ("resolved", "applied")
        assert _label(system, bob, data) == wrong  # every wearer's answer changed at once
        [label] = system.labels.of_ask(waiting.id)
        assert (label.source, label.author, label.status) == ("reviewer", "gina", "applied")

        # A name the catalogue lacks is a proposal; "cannot tell" makes no label.
        for value, became in (("dragon fruit", "proposal"), (None, None)):
            record = system.ask("what is this?", data, device_id=ann)
            queued = system.humans.queue.enqueue_ask(system.get_ask(record.id), live=True)
            body = {"action": "answer", "value": value} if value else {"action": "reject"}
            r = client.post(f"/v1/review/items/{queued.id}/answer", headers=h, json=body)
            assert r.status_code == 200 and r.json()["label"] == became, r.text


def test_a_gold_answer_reports_what_the_same_answer_to_an_ask_would_become(small_system: Lookloop,
                                                                           grocery: GroceryDataset) -> None:
    system = small_system
    queue = system.humans.queue
    nina = _reviewer(system, "nina")
    gold = queue.add_gold(question="what is this?", frame_sha=None, answer="Banana")
    record = system.ask("what is this?", _photo(grocery), device_id=_wearer(system, "ann"))
    real = queue.enqueue_ask(system.get_ask(record.id), live=True)
    replies = [system.humans.answer(i.id, nina, "answer", "Banana") for i in (gold, real)]
    assert [(r.submission.status, r.label) for r in replies] == [("resolved", "pending")] * 2
    new = queue.add_gold(question="what is this?", frame_sha=None, answer="Kiwi")
    assert system.humans.answer(new.id, nina, "answer", "dragon fruit").label == "proposal"
