"""The live path: an escalation reaches an on-duty reviewer's socket, the answer reaches the wearer's stream
and teaches the model at once; with nobody answering, the wearer is told and the item stays queued."""

from __future__ import annotations

from collections.abc import Iterator

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
    device, reviewer, _ = credentials(client, small_system)
    photo = unknown_photo(small_system, grocery)
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
        assert status == {"type": "status", "ask_id": first["id"], "status": STATUS_ASKING}
        answer = client.post(f"/v1/review/items/{item['id']}/answer", json={"action": "answer", "value": photo.label},
                             headers=bearer(reviewer))
        assert answer.status_code == 200 and answer.json()["resolved"], answer.text
        # Answered: the item (and its frame) is no longer the reviewer's to open.
        assert client.get(item["frame_url"], headers=bearer(reviewer)).status_code == 404
        assert client.get(f"/v1/review/items/{item['id']}", headers=bearer(reviewer)).status_code == 404
        event = wearer_ws.receive_json()
        assert event["type"] == "answer" and event["ask_id"] == first["id"] and event["source"] == "human"
        assert event["final"] is True and photo.label.split("-")[0] in event["text"] and event["hud"]

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
        assert late == {"type": "status", "ask_id": first["id"], "status": STATUS_TIMED_OUT}
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
