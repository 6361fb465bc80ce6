"""The live path: an escalation reaches an on-duty reviewer's socket, the answer reaches the wearer's stream
and teaches the model at once; with nobody answering, the wearer is told and the item stays queued."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from humans_util import bearer, credentials, unknown_photo

from lookloop.humans.runtime import STATUS_ASKING, STATUS_TIMED_OUT
from lookloop.server.app import create_app
from lookloop.system import Lookloop


@pytest.fixture
def client(small_system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=small_system, warm=False)) as c:
        yield c


def test_escalation_goes_to_the_reviewer_and_the_answer_to_the_wearer(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    from lookloop.catalog import grocery_catalog

    small_system.settings.trust_min_gold_answers = 0  # the reviewer's answer teaches everyone at once
    device, reviewer, _ = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    # A product the catalogue lists but the model has never seen (a name it lacks would wait for an operator).
    small_system.upsert_items([i for i in grocery_catalog(grocery.root) if i.name == photo.label])
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws, \
            client.websocket_connect(f"/v1/review/stream?token={reviewer}") as review_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        assert review_ws.receive_json()["type"] == "hello"
        r = client.post("/v1/asks", data={"question": "what is this?"},
                        files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device))
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["answer"]["decision"] == "escalate"
        assert first["device_id"] != "anonymous"

        pushed = review_ws.receive_json()
        queued = small_system.humans.queue.for_ask(first["id"])
        assert pushed["type"] == "item" and queued is not None and pushed["item"]["id"] == queued.id
        assert "ask_id" not in pushed["item"]  # reviewers work on items (a gold item has no ask to give away)
        item = pushed["item"]
        assert item["live"] and item["lock_expires_at"] and item["candidates"]
        frame = client.get(item["frame_url"], headers=bearer(reviewer))
        assert frame.status_code == 200 and frame.content[:3] == b"\xff\xd8\xff"
        assert client.get(item["frame_url"], headers=bearer(device)).status_code == 403

        status = wearer_ws.receive_json()
        assert {k: status[k] for k in ("type", "ask_id", "status", "state", "question", "position")} == {
            "type": "status", "ask_id": first["id"], "status": STATUS_ASKING, "state": "asking",
            "question": "what is this?", "position": 1}
        assert status["waited_s"] == 0
        answer = client.post(f"/v1/review/items/{item['id']}/answer", json={"action": "answer", "value": photo.label},
                             headers=bearer(reviewer))
        assert answer.status_code == 200 and answer.json()["resolved"], answer.text
        # Answered: the item (and its frame) is no longer the reviewer's to open.
        assert client.get(item["frame_url"], headers=bearer(reviewer)).status_code == 404
        assert client.get(f"/v1/review/items/{item['id']}", headers=bearer(reviewer)).status_code == 404
        event = wearer_ws.receive_json()
        assert event["type"] == "answer" and event["ask_id"] == first["id"] and event["source"] == "human"
        assert event["final"] is True and photo.label.split("-")[0] in event["text"] and event["hud"]
        _is_thumbnail(event["thumbnail_url"])
        assert event["question"] == "what is this?"

    settled = client.get(f"/v1/asks/{first['id']}", headers=bearer(device)).json()
    assert settled["outcome"] == "human_answered"
    again = client.post("/v1/asks", data={"question": "what is this?"},
                        files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device)).json()
    assert again["answer"]["decision"] == "answer"  # learned at once: no human this time
    assert again["answer"]["result"]["label"] == photo.label
    assert small_system.humans.queue.for_ask(again["id"]) is None


def test_nobody_answering_tells_the_wearer_and_keeps_the_item(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    small_system.settings.live_answer_timeout_s = 0.3
    device, reviewer, _ = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        first = client.post("/v1/asks", data={"question": "what is this?"},
                            files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device)).json()
        assert wearer_ws.receive_json()["status"] == STATUS_ASKING
        late = wearer_ws.receive_json()
        assert (late["type"], late["ask_id"], late["status"], late["state"]) == (
            "status", first["id"], STATUS_TIMED_OUT, "timed_out")
    item = small_system.humans.queue.for_ask(first["id"])
    assert item is not None and item.status == "open" and not item.live
    # Still queued: a reviewer who signs in later gets it from the queue.
    got = client.post("/v1/review/next", headers=bearer(reviewer)).json()
    assert got["id"] == item.id


def test_a_label_given_outside_the_queue_settles_its_item(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    device, _, operator = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    first = client.post("/v1/asks", data={"question": "what is this?"},
                        files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device)).json()
    r = client.post(f"/v1/asks/{first['id']}/labels", json={"value": photo.label}, headers=bearer(operator))
    assert r.status_code == 200, r.text
    item = small_system.humans.queue.for_ask(first["id"])
    assert item is not None and item.status == "resolved"


# -- issue 14: a wearer waiting for a person is never left guessing ---------------------------------------------------


def _is_thumbnail(url: str) -> None:
    """A data URL of a small JPEG: the device that got the event shows it without a token or a second request."""
    import base64
    import io

    from PIL import Image

    assert url.startswith("data:image/jpeg;base64,"), url[:40]
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.format == "JPEG" and max(img.size) <= 160 and min(img.size) >= 8


def _escalate(client: TestClient, photo: Any, device: str, question: str = "what is this?",
              skill: str | None = None) -> dict[str, Any]:
    data = {"question": question} | ({"skill": skill} if skill else {})
    r = client.post("/v1/asks", data=data, files={"image": ("p.jpg", photo.path.read_bytes())},
                    headers=bearer(device))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["answer"]["decision"] == "escalate"
    return body


def test_a_waiting_wearer_hears_the_queue_position_and_time_waited_every_few_seconds(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    """Status events repeat while a person is found: position (1: next) and seconds waited, the question with
    them. An ask escalated earlier by someone else stands ahead; once it is answered, this one moves up."""
    small_system.settings.wait_update_s = 0.7
    device, reviewer, _ = credentials(client, small_system)
    _, other = small_system.humans.accounts.add_device("olof", "other glasses")
    photo = unknown_photo(small_system, grocery)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        ahead = _escalate(client, photo, other)
        mine = _escalate(client, photo, device, "which mushroom is this?")
        first = wearer_ws.receive_json()
        assert (first["ask_id"], first["state"], first["position"], first["waited_s"]) == (mine["id"], "asking", 2, 0)
        assert first["question"] == "which mushroom is this?" and first["with_helper"] is False
        updates = [wearer_ws.receive_json() for _ in range(2)]
        assert all(u["type"] == "status" and u["state"] == "asking" and u["position"] == 2 for u in updates)
        assert updates[-1]["waited_s"] >= 1, updates
        item = small_system.humans.queue.for_ask(ahead["id"])
        r = client.post(f"/v1/review/items/{item.id}/answer", json={"action": "answer", "value": photo.label},
                        headers=bearer(reviewer))
        assert r.status_code == 200, r.text
        moved = wearer_ws.receive_json()
        assert moved["ask_id"] == mine["id"] and moved["position"] == 1, moved
    small_system.settings.wait_update_s = 3600  # the updates stop with the test


def test_the_wearer_cancels_and_the_item_leaves_the_queue(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    """Only the device that asked may cancel; the item leaves the queue, the helper holding it is told, their
    answer is refused, the ask ends cancelled and no answer reaches the wearer."""
    device, reviewer, operator = credentials(client, small_system)
    _, other = small_system.humans.accounts.add_device("olof", "other glasses")
    photo = unknown_photo(small_system, grocery)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws, \
            client.websocket_connect(f"/v1/review/stream?token={reviewer}") as review_ws:
        assert wearer_ws.receive_json()["type"] == "hello" and review_ws.receive_json()["type"] == "hello"
        ask = _escalate(client, photo, device)
        pushed = review_ws.receive_json()
        assert pushed["type"] == "item"
        assert small_system.humans.queue.get(pushed["item"]["id"]).ask_id == ask["id"]  # reviewers see no ask ids
        assert wearer_ws.receive_json()["state"] == "asking"
        url = f"/v1/asks/{ask['id']}/cancel"
        assert client.post(url).status_code == 401
        assert client.post(url, headers=bearer(other)).status_code == 404
        assert client.post(url, headers=bearer(operator)).status_code == 403
        assert client.post(url, headers=bearer(reviewer)).status_code == 403
        r = client.post(url, headers=bearer(device))
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "cancelled" and r.json()["position"] is None
        told = wearer_ws.receive_json()
        assert (told["ask_id"], told["state"]) == (ask["id"], "cancelled")
        withdrawn = review_ws.receive_json()
        assert withdrawn == {"type": "withdrawn", "item_id": pushed["item"]["id"],
                             "reason": "the wearer stopped waiting"}
        late = client.post(f"/v1/review/items/{pushed['item']['id']}/answer",
                           json={"action": "answer", "value": photo.label}, headers=bearer(reviewer))
        assert late.status_code == 409 and "stopped waiting" in late.json()["detail"]
    assert client.post(url, headers=bearer(device)).json()["state"] == "cancelled"  # again: harmless
    assert client.post("/v1/review/next", headers=bearer(reviewer)).json() is None
    assert small_system.humans.queue.counts()["open"] == 0
    assert client.get(f"/v1/asks/{ask['id']}", headers=bearer(device)).json()["outcome"] == "cancelled"
    assert client.post(f"/v1/asks/{ask['id']}/keep-waiting", headers=bearer(device)).status_code == 409


def test_keep_waiting_puts_a_timed_out_ask_back_live(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    """After the time-out the ask is no longer first in the queue; keep waiting offers it live again, with a
    fresh time-out. An ask the AI answered, or one answered already, cannot be kept waiting."""
    small_system.settings.live_answer_timeout_s = 0.4
    device, reviewer, _ = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        ask = _escalate(client, photo, device)
        assert wearer_ws.receive_json()["state"] == "asking"
        assert wearer_ws.receive_json()["state"] == "timed_out"
        item = small_system.humans.queue.for_ask(ask["id"])
        assert not item.live
        small_system.settings.live_answer_timeout_s = 30
        r = client.post(f"/v1/asks/{ask['id']}/keep-waiting", headers=bearer(device))
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["position"]) == ("asking", 1)
        assert wearer_ws.receive_json()["state"] == "asking"
        assert small_system.humans.queue.for_ask(ask["id"]).live
        small_system.add_label(ask["id"], photo.label, source="human", author="helper")
        answer = wearer_ws.receive_json()
        assert answer["type"] == "answer" and answer["question"] == "what is this?"
    assert client.post(f"/v1/asks/{ask['id']}/keep-waiting", headers=bearer(device)).status_code == 409
    assert client.post(f"/v1/asks/{ask['id']}/cancel", headers=bearer(device)).status_code == 409


def test_a_reject_reads_in_the_terms_of_the_question(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    """"can't tell" on a price ask names the question; on an identify ask it says what could not be told."""
    device, reviewer, _ = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        for question, skill, said in (
            ("how much is it?", "price", "A helper could not answer “how much is it?”."),
            ("what is this?", "identify", "A helper could not tell what this is."),
        ):
            ask = _escalate(client, photo, device, question, skill)
            assert wearer_ws.receive_json()["type"] == "status"
            item = client.post("/v1/review/next", headers=bearer(reviewer)).json()
            assert small_system.humans.queue.get(item["id"]).ask_id == ask["id"]
            # The reviewer looks at the (redacted) frame before answering, as the review page shows it.
            assert client.get(item["frame_url"], headers=bearer(reviewer)).status_code == 200
            r = client.post(f"/v1/review/items/{item['id']}/answer", json={"action": "reject"},
                            headers=bearer(reviewer))
            assert r.status_code == 200, r.text
            event = wearer_ws.receive_json()
            assert (event["type"], event["text"], event["question"]) == ("answer", said, question)
            _is_thumbnail(event["thumbnail_url"])
            settled = client.get(f"/v1/asks/{ask['id']}", headers=bearer(device)).json()
            assert (settled["outcome"], settled["final_answer"]) == ("rejected", said)


def test_a_spot_check_is_not_the_wearers_to_cancel(
    client: TestClient, small_system: Lookloop, grocery  # type: ignore[no-untyped-def]
) -> None:
    """An ask the AI answered may be drawn for a spot check: that review item stays, whatever the wearer sends."""
    from conftest import small_val

    small_system.settings.audit_rate = 1.0
    device, _, _ = credentials(client, small_system)
    photo = next(p for p in small_val(grocery) if p.label == "Banana")
    r = client.post("/v1/asks", data={"question": "what is this?"}, files={"image": ("p.jpg", photo.path.read_bytes())},
                    headers=bearer(device))
    ask = r.json()
    assert ask["answer"]["decision"] == "answer"
    item = small_system.humans.queue.for_ask(ask["id"])
    assert item is not None and item.reason == "audit"
    for action in ("cancel", "keep-waiting"):
        refused = client.post(f"/v1/asks/{ask['id']}/{action}", headers=bearer(device))
        assert refused.status_code == 409 and "not waiting" in refused.json()["detail"], refused.text
    assert small_system.humans.queue.for_ask(ask["id"]).status == "open"


def test_a_label_reaches_the_waiting_wearer_without_running_the_redaction_passes_first(
        small_system: Lookloop, grocery: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The job worker has not got to the frame yet (its queue is not running here): the answer must not wait for
    # the faces-and-text passes, which take most of a second on a busy machine; it goes without a thumbnail.
    monkeypatch.setattr(small_system.jobs, "start", lambda: None)
    with TestClient(create_app(system=small_system, warm=False)) as client:
        device, _, operator = credentials(client, small_system)
        photo = unknown_photo(small_system, grocery)
        with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
            assert wearer_ws.receive_json()["type"] == "hello"
            ask = _escalate(client, photo, device)
            assert wearer_ws.receive_json()["type"] == "status"
            sha = small_system.get_ask(ask["id"]).frame_sha
            assert sha is not None
            before = small_system.privacy.info(sha)
            assert before is not None and before.stage != "full"
            value = small_system.catalogue.items()[0].name
            r = client.post(f"/v1/asks/{ask['id']}/labels", json={"value": value, "source": "human"},
                            headers=bearer(operator))
            assert r.status_code == 200, r.text
            event = wearer_ws.receive_json()
            assert event["type"] == "answer" and event["ask_id"] == ask["id"] and event["source"] == "human"
            assert event["thumbnail_url"] is None
            after = small_system.privacy.info(sha)
            assert after is not None and after.stage == before.stage  # no redaction pass ran on the answer path
            # Once redacted (as the job worker or a reviewer opening it does), the frame is there for thumbnails.
            small_system.privacy.ensure_full(sha)
            assert small_system.privacy.redacted_if_ready(sha) is not None


def _human_ask(client: TestClient, device: str, tag: str) -> str:
    r = client.post("/v1/asks", data={"question": f"please help me with {tag}", "skill": "human"},
                    headers=bearer(device))
    assert r.status_code == 200 and r.json()["answer"]["decision"] == "escalate", r.text
    return str(r.json()["id"])


def _next_item(ws: Any) -> dict[str, Any]:
    while True:  # queue counts come and go between the items
        ev = ws.receive_json()
        if ev["type"] == "item":
            return dict(ev["item"])


def test_a_reviewer_with_a_hand_free_gets_the_live_item_that_came_while_every_hand_was_full(
    client: TestClient, small_system: Lookloop
) -> None:
    """A live item that came while every on-duty reviewer held the most they may is pushed as soon as a hand is
    free: a reviewer coming on duty, or one who answers; a skipped live item goes to another reviewer on duty,
    never back to the one who passed it on."""
    device, rita, otto = credentials(client, small_system)
    queue = small_system.humans.queue
    with client.websocket_connect(f"/v1/review/stream?token={rita}") as rita_ws:
        assert rita_ws.receive_json()["type"] == "hello"
        asks = [_human_ask(client, device, tag) for tag in ("a", "b", "c", "d")]
        items = [queue.for_ask(a) for a in asks]
        assert all(i is not None for i in items)
        a, b, c, d = (i.id for i in items if i is not None)
        held = {_next_item(rita_ws)["id"], _next_item(rita_ws)["id"]}
        assert held == {a, b}
        assert queue.get(c).locked_by is None and queue.get(d).locked_by is None  # both hands were full
        with client.websocket_connect(f"/v1/review/stream?token={otto}") as otto_ws:
            assert otto_ws.receive_json()["type"] == "hello"
            # Coming on duty, he gets what waited longest at once.
            assert [_next_item(otto_ws)["id"], _next_item(otto_ws)["id"]] == [c, d]
            rita_id, otto_id = queue.get(a).locked_by, queue.get(c).locked_by
            assert rita_id is not None and otto_id is not None and otto_id != rita_id
            r = client.post(f"/v1/review/items/{a}/skip", headers=bearer(rita))
            assert r.status_code == 204, r.text
            assert queue.get(a).locked_by is None  # his hands are full, and it never goes back to her
            r = client.post(f"/v1/review/items/{c}/answer", json={"action": "answer", "value": "A helper is on it."},
                            headers=bearer(otto))
            assert r.status_code == 200 and r.json()["resolved"], r.text
            assert queue.get(a).locked_by == otto_id  # an answer frees a hand: the skipped item goes to him
            assert _next_item(otto_ws)["id"] == a


def test_the_queue_position_is_only_worked_out_for_a_wearer_who_is_listening(
    client: TestClient, small_system: Lookloop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where an ask stands is a count over every waiting item: an escalation whose wearer has no stream open (most
    asks from an app between looks) does not pay for it, a listening wearer still hears it."""
    device, _, _ = credentials(client, small_system)
    queue = small_system.humans.queue
    counted: list[str] = []
    position = queue.position

    def counting(item_id: str) -> int | None:
        counted.append(item_id)
        return position(item_id)

    monkeypatch.setattr(queue, "position", counting)
    _human_ask(client, device, "offline")
    assert counted == []
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        asked = _human_ask(client, device, "online")
        status = wearer_ws.receive_json()
        assert status["type"] == "status" and status["ask_id"] == asked and status["position"] == 2
    assert len(counted) == 1


def test_a_hand_freed_on_one_worker_fills_from_the_queue_on_the_worker_holding_the_reviewers_socket(
    tmp_path: Any, data_dir: Any, model_dir: Any, grocery: Any
) -> None:
    """Two workers on one database: the reviewer's socket is on B, their skip reaches A (a load balancer may
    split a page's requests). B still pushes them the live item that waited while both their hands were full."""
    from lookloop.humans.accounts import Principal
    from tests.conftest import make_settings, two_workers

    with two_workers(make_settings(tmp_path, data_dir, model_dir), grocery) as (a, b):
        dev = a.humans.accounts.add_device("wendy")[0].id
        info, _ = a.humans.accounts.add_account("rita", "reviewer")
        rita = Principal("account", "reviewer", account_id=info.id, name="rita")
        b.humans.hub.subscribe_reviewer(info.id, "reviewer", "rita-token")  # her socket is on B
        asks = [a.ask(f"please help me with {t}", None, device_id=dev, skill="human") for t in "xyz"]
        items = [a.humans.queue.for_ask(r.id) for r in asks]
        x, y, z = (i.id for i in items if i is not None)
        assert [a.humans.queue.get(i).locked_by for i in (x, y, z)] == [info.id, info.id, None]
        a.humans.skip(x, rita)
        assert a.humans.queue.get(z).locked_by == info.id  # pushed by B, where her socket is
        assert a.humans.queue.get(x).locked_by is None  # not back to the one who passed it on


def test_a_label_that_lands_before_the_escalation_is_queued_still_reaches_the_wearer(
    client: TestClient, small_system: Lookloop, grocery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The escalation is queued just after the reply; a person's label given in between (the labels API, another
    worker) finds no item to settle. The item then settles as it is queued, and the wearer hears the answer."""
    device, _, operator = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
    queue = small_system.humans.queue
    enqueue = queue.enqueue_ask

    def answered_first(record: Any, **kwargs: Any) -> Any:
        r = client.post(f"/v1/asks/{record.id}/labels", json={"value": photo.label}, headers=bearer(operator))
        assert r.status_code == 200, r.text
        return enqueue(record, **kwargs)

    monkeypatch.setattr(queue, "enqueue_ask", answered_first)
    with client.websocket_connect(f"/v1/devices/stream?token={device}") as wearer_ws:
        assert wearer_ws.receive_json()["type"] == "hello"
        asked = _escalate(client, photo, device)
        item = queue.for_ask(asked["id"])
        assert item is not None and item.status == "resolved" and not item.live  # no stale item for reviewers
        event = wearer_ws.receive_json()
        assert event["type"] == "answer" and event["ask_id"] == asked["id"] and event["source"] == "human"


def test_a_reviewer_whose_worker_died_gets_their_items_again_and_new_ones_on_the_worker_they_come_back_to(
    tmp_path: Any, data_dir: Any, model_dir: Any, grocery: Any
) -> None:
    """Worker B dies with the reviewer's socket: nothing releases the items pushed to it. Their page reconnects
    to A: the items still locked to them come again, and a hand freed there fills with what waited meanwhile."""
    from lookloop.humans.accounts import Principal
    from tests.conftest import make_settings, two_workers

    with two_workers(make_settings(tmp_path, data_dir, model_dir), grocery) as (a, b):
        dev = a.humans.accounts.add_device("wendy")[0].id
        info, _ = a.humans.accounts.add_account("rita", "reviewer")
        rita = Principal("account", "reviewer", account_id=info.id, name="rita")
        on_b = b.humans.hub.subscribe_reviewer(info.id, "reviewer", "rita-token")
        asks = [a.ask(f"please help me with {t}", None, device_id=dev, skill="human") for t in "xyz"]
        items = [a.humans.queue.for_ask(r.id) for r in asks]
        x, y, z = (i.id for i in items if i is not None)
        assert [a.humans.queue.get(i).locked_by for i in (x, y, z)] == [info.id, info.id, None]
        b.humans.hub.unsubscribe_reviewer(on_b)  # B is killed: its socket goes without a word, the locks stay

        loop = asyncio.new_event_loop()
        try:
            a.humans.hub.bind(loop)
            on_a = a.humans.hub.subscribe_reviewer(info.id, "reviewer", "rita-token")
            a.humans.on_duty(info.id)
            loop.run_until_complete(asyncio.sleep(0.05))
            events = [on_a.queue.get_nowait() for _ in range(on_a.queue.qsize())]
            again = [e["item"]["id"] for e in events if e.get("type") == "item"]
            assert again == [x, y]  # on her page again; before, they stayed hidden until the lock timed out
            a.humans.skip(x, rita)
            loop.run_until_complete(asyncio.sleep(0.05))
            events = [on_a.queue.get_nowait() for _ in range(on_a.queue.qsize())]
            pushed = [e["item"]["id"] for e in events if e.get("type") == "item"]
            assert z in pushed and a.humans.queue.get(z).locked_by == info.id
        finally:
            loop.close()


def test_a_reviewer_socket_that_fails_coming_on_duty_leaves_nobody_on_duty(
    client: TestClient, small_system: Lookloop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If handing a reviewer what waited fails (the database gone for a moment), the socket closes and the hub
    does not keep them on duty: live items would otherwise be pushed to a socket nobody reads."""
    from sqlalchemy.exc import OperationalError

    _, rita, _ = credentials(client, small_system)

    def fails(account_id: str) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database gone"))

    monkeypatch.setattr(small_system.humans, "on_duty", fails)
    with pytest.raises(Exception), client.websocket_connect(f"/v1/review/stream?token={rita}") as ws:  # noqa: B017
        assert ws.receive_json()["type"] == "hello"
        ws.receive_json()  # the socket closes
    assert small_system.humans.hub.reviewers_on_duty() == []
