"""Wearer feedback: explicit right/wrong with corrections, implicit 'wrong' from a quick re-ask, and who may give it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import small_val
from fastapi.testclient import TestClient
from humans_util import bearer, credentials

from lookloop.server.app import create_app
from lookloop.store.tables import LabelRow
from lookloop.system import Lookloop


@pytest.fixture
def client(small_system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=small_system, warm=False)) as c:
        yield c


def _ask(client: TestClient, data: bytes, headers: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    r = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("x.jpg", data)},
                    headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _labels(system: Lookloop, ask_id: str) -> list[tuple[str, str]]:
    with system.db.session() as s:
        return [(r.value, r.source) for r in s.query(LabelRow).filter(LabelRow.ask_id == ask_id).all()]


def test_right_and_wrong_with_a_correction_become_data(client: TestClient, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = credentials(client, small_system)
    photos = small_val(grocery)
    banana = next(p for p in photos if p.label == "Banana")
    first = _ask(client, banana.path.read_bytes(), bearer(device))
    assert first["answer"]["decision"] == "answer"
    r = client.post(f"/v1/asks/{first['id']}/feedback", json={"verdict": "right"}, headers=bearer(device))
    assert r.status_code == 201, r.text
    assert r.json()["verdict"] == "right" and r.json()["implicit"] is False
    assert _labels(small_system, first["id"]) == [(first["answer"]["result"]["label"], "wearer")]
    assert client.get(f"/v1/asks/{first['id']}", headers=bearer(device)).json()["outcome"] == "confirmed"

    cucumber = next(p for p in photos if p.label == "Cucumber")
    second = _ask(client, cucumber.path.read_bytes(), bearer(device))
    r = client.post(f"/v1/asks/{second['id']}/feedback", json={"verdict": "wrong", "correction": "Oatly-Oat-Milk"},
                    headers=bearer(device))
    assert r.status_code == 201 and r.json()["correction"] == "Oatly-Oat-Milk"
    assert ("Oatly-Oat-Milk", "wearer") in _labels(small_system, second["id"])
    settled = client.get(f"/v1/asks/{second['id']}", headers=bearer(device)).json()
    assert settled["outcome"] == "corrected"
    stored = small_system.humans.feedback.list(ask_id=second["id"])
    assert [(f.verdict, f.correction, f.implicit) for f in stored] == [("wrong", "Oatly-Oat-Milk", False)]
    # The correction teaches at once: the same photo now gets the corrected answer.
    again = _ask(client, cucumber.path.read_bytes(), bearer(device))
    assert again["answer"]["result"]["label"] == "Oatly-Oat-Milk"


def test_a_quick_reask_is_an_implicit_wrong(client: TestClient, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = credentials(client, small_system)
    milk = next(p for p in small_val(grocery) if p.label == "Arla-Standard-Milk")
    first = _ask(client, milk.path.read_bytes(), bearer(device))
    assert first["answer"]["decision"] == "answer"
    assert small_system.humans.feedback.list(ask_id=first["id"]) == []
    _ask(client, milk.path.read_bytes(), bearer(device))
    [implicit] = small_system.humans.feedback.list(ask_id=first["id"])
    assert (implicit.verdict, implicit.implicit, implicit.correction) == ("wrong", True, None)

    # Outside the window, or from another device, a re-ask says nothing about the earlier answer.
    small_system.settings.reask_window_s = 0
    third = _ask(client, milk.path.read_bytes(), bearer(device))
    _ask(client, milk.path.read_bytes(), bearer(device))
    assert small_system.humans.feedback.list(ask_id=third["id"]) == []


def test_feedback_is_checked(client: TestClient, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    device, reviewer, _ = credentials(client, small_system)
    _, other = small_system.humans.accounts.add_device("someone-else")
    data = small_val(grocery)[0].path.read_bytes()
    mine = _ask(client, data, bearer(device))
    url = f"/v1/asks/{mine['id']}/feedback"
    assert client.post(url, json={"verdict": "maybe"}, headers=bearer(device)).status_code == 422
    assert client.post(url, json={"verdict": "right", "correction": "x"}, headers=bearer(device)).status_code == 422
    assert client.post(url, json={"verdict": "right"}, headers=bearer(other)).status_code in (403, 404)
    assert client.post(url, json={"verdict": "right"}, headers=bearer(reviewer)).status_code == 403
    assert client.post(url, json={"verdict": "right"}).status_code == 403
    assert client.post("/v1/asks/nope/feedback", json={"verdict": "right"}, headers=bearer(device)).status_code == 404
    anonymous = _ask(client, data)
    assert anonymous["device_id"] == "anonymous"
    r = client.post(f"/v1/asks/{anonymous['id']}/feedback", json={"verdict": "wrong"})
    assert r.status_code == 201 and r.json()["device_id"] == "anonymous"


def test_feedback_with_an_idempotency_key_is_stored_once(tmp_path, data_dir, model_dir, grocery) -> None:  # type: ignore[no-untyped-def]
    from conftest import build_small_system, make_settings, small_val
    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from lookloop.humans.tables import FeedbackRow
    from lookloop.server.app import create_app
    from lookloop.store.tables import LabelRow

    system = build_small_system(make_settings(tmp_path, data_dir, model_dir), grocery)
    with TestClient(create_app(system=system, warm=False)) as c:
        photo = small_val(grocery)[0].path.read_bytes()
        _, token = system.humans.accounts.add_device("fay", "test glasses")
        auth = {"Authorization": f"Bearer {token}"}
        ask = c.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("x.jpg", photo)},
                     headers=auth).json()
        headers = {"Idempotency-Key": "fb-1", **auth}
        body = {"verdict": "wrong", "correction": "Cucumber"}
        first = c.post(f"/v1/asks/{ask['id']}/feedback", json=body, headers=headers)
        again = c.post(f"/v1/asks/{ask['id']}/feedback", json=body, headers=headers)
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        # The same key with another verdict is another request: refused with a reason, nothing stored.
        other = c.post(f"/v1/asks/{ask['id']}/feedback", json={"verdict": "right"}, headers=headers)
        assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    with system.db.session() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRow)) == 1
        assert s.scalar(select(func.count()).select_from(LabelRow).where(LabelRow.ask_id == ask["id"])) == 1
    system.db.dispose()


# -- issue 14: implicit "wrong" only for a re-ask of the same skill about the same frame ---------------------------


def test_only_a_reask_of_the_same_skill_is_an_implicit_wrong(small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    """"how much is it?" after "what is this?", or dictation, memory and translation asks one after another, say
    nothing against the answer before; asking the same skill again about the same frame does."""
    import datetime as dt

    from episode_fixtures import add_episode

    from lookloop.domain import utcnow

    photo = next(p for p in small_val(grocery) if p.label == "Banana")
    feedback = small_system.humans.feedback
    cases = [("identify", "identify", True), ("read", "read", True), ("identify", "price", False),
             ("price", "identify", False), ("identify", "colour", False), ("notes", "notes", False),
             ("remember", "remember", False), ("recall", "recall", False), ("translate", "translate", False)]
    for n, (first, second, counts) in enumerate(cases):
        device = f"dev-{n}"
        now = utcnow()
        before = add_episode(small_system, image=photo, truth="Banana", guess="Banana", decision="answer",
                             created_at=now - dt.timedelta(seconds=5), device_id=device, skill=first)
        again = add_episode(small_system, image=photo, truth="Banana", guess="Banana", decision="answer",
                            created_at=now, device_id=device, skill=second)
        implied = feedback.on_asked(small_system.asks.get(again["id"]))
        assert (implied is not None) is counts, (first, second)
        stored = feedback.list(ask_id=before["id"])
        assert [(f.verdict, f.implicit) for f in stored] == ([("wrong", True)] if counts else []), (first, second)


def test_asking_the_price_after_what_it_is_is_no_complaint(client: TestClient, small_system: Lookloop, grocery) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = credentials(client, small_system)
    milk = next(p for p in small_val(grocery) if p.label == "Arla-Standard-Milk")
    first = _ask(client, milk.path.read_bytes(), bearer(device))
    assert first["answer"]["skill"] == "identify" and first["answer"]["decision"] == "answer"
    r = client.post("/v1/asks", data={"question": "how much is it?"},
                    files={"image": ("x.jpg", milk.path.read_bytes())}, headers=bearer(device))
    assert r.status_code == 200 and r.json()["answer"]["skill"] == "price", r.text
    assert small_system.humans.feedback.list(ask_id=first["id"]) == []
