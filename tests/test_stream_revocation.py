"""Revoked credentials end open streams: a disabled, signed-out or re-passworded reviewer's review socket closes
(4401 and the reason) and their locks go back within a second; a revoked device's answer stream (WebSocket and
server-sent events) closes too. Revocations made by another process (the CLI) are noticed by the per-message
and periodic token checks within a second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from humans_util import bearer, credentials, unknown_photo

from lookloop.catalog import GroceryDataset
from lookloop.humans.accounts import Accounts
from lookloop.humans.live import REVOKED_CLOSE_CODE
from lookloop.server.app import create_app
from lookloop.system import Lookloop

WITHIN_S = 1.5  # "within a second", with a little room for a busy test machine


@pytest.fixture
def client(small_system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=small_system, warm=False)) as c:
        yield c


@pytest.fixture
def light_system(tmp_path: Path, data_dir: Path, model_dir: Path) -> Iterator[Lookloop]:
    system = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    system.migrate()
    yield system
    system.db.dispose()


@pytest.fixture
def light_client(light_system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=light_system, warm=False)) as c:
        yield c


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` run in a thread; fails the test when it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"nothing happened within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _next_message(ws: Any, seconds: float = WITHIN_S) -> dict[str, Any]:
    message: dict[str, Any] = _within(seconds, ws.receive)
    return message


def _escalate(client: TestClient, system: Lookloop, grocery: GroceryDataset, device: str) -> str:
    photo = unknown_photo(system, grocery)
    r = client.post("/v1/asks", data={"question": "what is this?"},
                    files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device))
    assert r.status_code == 200 and r.json()["answer"]["decision"] == "escalate", r.text
    ask_id: str = r.json()["id"]
    return ask_id


def _second_reviewer(client: TestClient, system: Lookloop) -> str:
    system.humans.accounts.add_account("rob", "reviewer", "reviewer-pass-2")
    r = client.post("/v1/auth/login", json={"username": "rob", "password": "reviewer-pass-2"})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def _claim_until_free(client: TestClient, item_id: str, token: str, deadline: float) -> int:
    """Another reviewer claims the item, retrying until it is free or the deadline passed."""
    while True:
        code = client.post(f"/v1/review/items/{item_id}/claim", headers=bearer(token)).status_code
        if code != 409 or time.monotonic() > deadline:
            return code
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["disable", "logout", "password"])
def test_a_signed_out_reviewer_socket_closes_and_its_locks_go_back(
    client: TestClient, small_system: Lookloop, grocery: GroceryDataset, how: str
) -> None:
    device, rita, _ = credentials(client, small_system)
    rob = _second_reviewer(client, small_system)
    rita_id = small_system.humans.accounts.principal(rita).account_id
    assert rita_id is not None
    with client.websocket_connect(f"/v1/review/stream?token={rita}") as ws:
        assert ws.receive_json()["type"] == "hello"
        ask_id = _escalate(client, small_system, grocery, device)
        pushed = ws.receive_json()
        item_id = pushed["item"]["id"]  # reviewers see items, not ask ids
        assert pushed["type"] == "item" and small_system.humans.queue.get(item_id).ask_id == ask_id
        assert client.post(f"/v1/review/items/{item_id}/claim", headers=bearer(rob)).status_code == 409

        started = time.monotonic()
        if how == "disable":
            small_system.humans.accounts.set_disabled("rita", True)
            reason = "the account is disabled"
        elif how == "logout":
            assert client.post("/v1/auth/logout", headers=bearer(rita)).status_code == 204
            reason = "signed out"
        else:
            small_system.humans.accounts.set_password("rita", "a-new-password")
            reason = "the password changed; sign in again"
        # Whatever is published from now on never reaches the revoked socket: it has left the hub.
        assert rita_id not in small_system.humans.hub.reviewers_on_duty()
        assert small_system.humans.hub.send_reviewer(rita_id, {"type": "item", "item": {"question": "secret"}}) \
            is False

        closing = _next_message(ws)
        assert closing == {"type": "websocket.close", "code": REVOKED_CLOSE_CODE, "reason": reason}
        assert time.monotonic() - started < WITHIN_S
        # The item rita held is free for another reviewer at once.
        assert _claim_until_free(client, item_id, rob, started + WITHIN_S) == 200


def test_a_revocation_by_another_process_is_noticed_within_a_second(
    client: TestClient, small_system: Lookloop, grocery: GroceryDataset
) -> None:
    """The CLI disables the account in its own process: the server hears nothing and must notice by itself."""
    device, rita, _ = credentials(client, small_system)
    rob = _second_reviewer(client, small_system)
    with client.websocket_connect(f"/v1/review/stream?token={rita}") as ws:
        assert ws.receive_json()["type"] == "hello"
        _escalate(client, small_system, grocery, device)
        item_id = ws.receive_json()["item"]["id"]

        elsewhere = Accounts(small_system.db)  # another process's view: none of the server's listeners
        started = time.monotonic()
        elsewhere.set_disabled("rita", True)  # as `lookloop users disable rita` would, in its own process

        closing = _next_message(ws)
        assert closing["type"] == "websocket.close" and closing["code"] == REVOKED_CLOSE_CODE
        assert "sign in again" in closing["reason"] or "disabled" in closing["reason"]
        assert time.monotonic() - started < WITHIN_S
        assert _claim_until_free(client, item_id, rob, started + WITHIN_S) == 200


def test_a_revoked_device_stream_closes_and_hears_no_more_answers(
    light_client: TestClient, light_system: Lookloop
) -> None:
    accounts = light_system.humans.accounts
    device, token = accounts.add_device("wendy", "glasses")
    hub = light_system.humans.hub
    with light_client.websocket_connect(f"/v1/devices/stream?token={token}") as ws:
        assert ws.receive_json()["type"] == "hello"
        hub.send_device(device.id, {"type": "answer", "text": "before"})
        assert ws.receive_json()["text"] == "before"
        started = time.monotonic()
        accounts.revoke_device(device.id)
        hub.send_device(device.id, {"type": "answer", "text": "after"})  # published after the revocation
        closing = _next_message(ws)
        assert closing == {"type": "websocket.close", "code": REVOKED_CLOSE_CODE,
                           "reason": "the device token was revoked"}
        assert time.monotonic() - started < WITHIN_S


def test_a_device_revoked_elsewhere_closes_its_socket_within_a_second(
    light_client: TestClient, light_system: Lookloop
) -> None:
    device, token = light_system.humans.accounts.add_device("wendy", "glasses")
    with light_client.websocket_connect(f"/v1/devices/stream?token={token}") as ws:
        assert ws.receive_json()["type"] == "hello"
        started = time.monotonic()
        Accounts(light_system.db).revoke_device(device.id)  # as the CLI would, in its own process
        closing = _next_message(ws)
        assert closing["type"] == "websocket.close" and closing["code"] == REVOKED_CLOSE_CODE
        assert closing["reason"] == "the device token is unknown or revoked"
        assert time.monotonic() - started < WITHIN_S


def test_sockets_recheck_the_token_on_every_message(light_client: TestClient, light_system: Lookloop) -> None:
    """A ping after a revocation elsewhere is answered by the close, not by a pong (once the cached check aged)."""
    device, token = light_system.humans.accounts.add_device("wendy", "glasses")
    with light_client.websocket_connect(f"/v1/devices/stream?token={token}") as ws:
        assert ws.receive_json()["type"] == "hello"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
        Accounts(light_system.db).revoke_device(device.id)
        ws.send_json({"type": "ping"})
        replies = []
        while True:
            message = _next_message(ws)
            if message["type"] == "websocket.close":
                break
            replies.append(message)
        assert message["code"] == REVOKED_CLOSE_CODE
        assert len(replies) <= 1  # at most the pong answered from a verdict cached before the revocation


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_revoked_device_sse_stream_ends(light_client: TestClient, light_system: Lookloop, where: str) -> None:
    device, token = light_system.humans.accounts.add_device("wendy", "glasses")
    hub = light_system.humans.hub
    lines: list[str] = []
    hello = threading.Event()

    def read() -> None:
        with light_client.stream("GET", "/v1/devices/stream/sse", headers=bearer(token)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    hello.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert hello.wait(5) and '"hello"' in lines[0]
    started = time.monotonic()
    if where == "here":
        light_system.humans.accounts.revoke_device(device.id)
        hub.send_device(device.id, {"type": "answer", "text": "after"})
    else:
        Accounts(light_system.db).revoke_device(device.id)
    reader.join(WITHIN_S)
    assert not reader.is_alive(), "the event stream did not end"
    assert time.monotonic() - started < WITHIN_S
    assert not any('"answer"' in line for line in lines)
    assert '"closed"' in lines[-1] and "revoked" in lines[-1]
