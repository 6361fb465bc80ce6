"""Accounts, device tokens and sessions; role checks on the asks, catalogue and review routes."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient

from lookloop.errors import BadInput, Conflict, Unauthorized
from lookloop.humans.accounts import Accounts, token_hash
from lookloop.humans.tables import DeviceRow, SessionRow
from lookloop.server.app import create_app
from lookloop.system import Lookloop


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path, database_url: str) -> Lookloop:
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url))
    s.migrate()
    return s


@pytest.fixture
def client(system: Lookloop):  # type: ignore[no-untyped-def]
    with TestClient(create_app(system=system, warm=False)) as c:
        yield c


def _login(client: TestClient, username: str, password: str) -> dict[str, str]:
    r = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_passwords_are_hashed_and_tokens_only_stored_as_digests(system: Lookloop) -> None:
    accounts = system.humans.accounts
    _, pw = accounts.add_account("rita", "reviewer", "correct horse")
    assert pw == "correct horse"
    [info] = accounts.list_accounts()
    with system.db.session() as s:
        from lookloop.humans.tables import AccountRow

        row = s.get(AccountRow, info.id)
        assert row is not None and row.password_hash.startswith("$argon2") and "correct horse" not in row.password_hash
    token, _ = accounts.login("rita", "correct horse")
    assert token.startswith("ses_")
    device, dev_token = accounts.add_device("wendy", "left glasses")
    assert dev_token.startswith("dev_")
    with system.db.session() as s:
        assert s.get(SessionRow, token_hash(token)) is not None
        dev = s.get(DeviceRow, device.id)
        assert dev is not None and dev.token_hash == token_hash(dev_token) and dev_token not in dev.token_hash


def test_account_input_is_checked(system: Lookloop) -> None:
    accounts = system.humans.accounts
    with pytest.raises(BadInput):
        accounts.add_account("bad name!", "reviewer", "long enough")
    with pytest.raises(BadInput):
        accounts.add_account("sam", "wearer", "long enough")
    with pytest.raises(BadInput):
        accounts.add_account("sam", "reviewer", "short")
    accounts.add_account("sam", "reviewer", "long enough")
    with pytest.raises(Conflict):
        accounts.add_account("sam", "operator", "long enough")


def test_wrong_password_disabled_account_and_expiry(system: Lookloop) -> None:
    accounts = system.humans.accounts
    accounts.add_account("otto", "operator", "secret-secret")
    with pytest.raises(Unauthorized):
        accounts.login("otto", "nope-nope")
    with pytest.raises(Unauthorized):
        accounts.login("nobody", "secret-secret")
    token, _ = accounts.login("otto", "secret-secret")
    assert accounts.principal(token).role == "operator"
    with system.db.session() as s:
        row = s.get(SessionRow, token_hash(token))
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with pytest.raises(Unauthorized):
        accounts.principal(token)
    token, _ = accounts.login("otto", "secret-secret")
    accounts.set_disabled("otto", True)
    with pytest.raises(Unauthorized):
        accounts.principal(token)
    with pytest.raises(Unauthorized):
        accounts.login("otto", "secret-secret")


def test_revoked_device_is_refused(system: Lookloop) -> None:
    accounts = system.humans.accounts
    device, token = accounts.add_device("wendy")
    p = accounts.principal(token)
    assert (p.kind, p.role, p.device_id) == ("device", "wearer", device.id)
    accounts.revoke_device(device.id)
    with pytest.raises(Unauthorized):
        accounts.principal(token)


def test_demo_credentials_file_is_private_and_stable(system: Lookloop, tmp_path: Path) -> None:
    accounts: Accounts = system.humans.accounts
    path = tmp_path / "var" / "demo-credentials.json"
    creds = accounts.ensure_demo(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == creds
    assert accounts.principal(creds["device"]["token"]).role == "wearer"
    assert accounts.login(creds["reviewer"]["username"], creds["reviewer"]["password"])[1].role == "reviewer"
    assert accounts.login(creds["operator"]["username"], creds["operator"]["password"])[1].role == "operator"
    assert accounts.ensure_demo(path) == creds  # a restart keeps them


def test_http_login_me_and_logout(client: TestClient, system: Lookloop) -> None:
    system.humans.accounts.add_account("rita", "reviewer", "correct horse")
    assert client.post("/v1/auth/login", json={"username": "rita", "password": "wrong"}).status_code == 401
    assert client.post("/v1/auth/login", json={"username": "rita"}).status_code == 422
    headers = _login(client, "rita", "correct horse")
    me = client.get("/v1/auth/me", headers=headers)
    assert me.status_code == 200 and me.json()["role"] == "reviewer" and me.json()["name"] == "rita"
    assert client.get("/v1/auth/me").status_code == 401
    assert client.get("/v1/auth/me", headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.get("/v1/auth/me", headers={"Authorization": "Bearer ses_made_up"}).status_code == 401
    assert client.post("/v1/auth/logout", headers=headers).status_code == 204
    assert client.get("/v1/auth/me", headers=headers).status_code == 401


def test_roles_guard_catalogue_writes_review_and_listing(client: TestClient, system: Lookloop) -> None:
    accounts = system.humans.accounts
    accounts.add_account("rita", "reviewer", "reviewer-pass")
    accounts.add_account("otto", "operator", "operator-pass")
    _, dev_token = accounts.add_device("wendy")
    reviewer = _login(client, "rita", "reviewer-pass")
    operator = _login(client, "otto", "operator-pass")
    device = {"Authorization": f"Bearer {dev_token}"}
    item = {"id": "tea", "name": "Tea"}

    assert client.post("/v1/catalog", json=item).status_code == 401
    assert client.post("/v1/catalog", json=item, headers=reviewer).status_code == 403
    assert client.post("/v1/catalog", json=item, headers=device).status_code == 403
    assert client.post("/v1/catalog", json=item, headers=operator).status_code == 201
    assert client.get("/v1/catalog").status_code == 200  # reads stay open
    assert client.delete("/v1/catalog/tea", headers=reviewer).status_code == 403
    assert client.delete("/v1/catalog/tea", headers=operator).status_code == 204

    assert client.post("/v1/review/next").status_code == 401
    assert client.post("/v1/review/next", headers=device).status_code == 403
    assert client.post("/v1/review/next", headers=reviewer).status_code == 200
    assert client.post("/v1/review/next", headers=operator).status_code == 200  # operator ⊇ reviewer
    assert client.get("/v1/review/stats", headers=device).status_code == 403

    assert client.get("/v1/asks").status_code == 401
    assert client.get("/v1/asks", headers=reviewer).status_code == 403
    assert client.get("/v1/asks", headers=device).status_code == 200
    assert client.get("/v1/asks", headers=operator).status_code == 200
    assert client.get("/v1/asks", params={"device_id": "someone-else"}, headers=device).status_code == 403


def test_websockets_need_a_token_of_the_right_role(client: TestClient, system: Lookloop) -> None:
    from starlette.websockets import WebSocketDisconnect

    accounts = system.humans.accounts
    accounts.add_account("rita", "reviewer", "reviewer-pass")
    _, dev_token = accounts.add_device("wendy")
    ses = _login(client, "rita", "reviewer-pass")["Authorization"].split()[1]
    for url in ("/v1/devices/stream", "/v1/devices/stream?token=dev_nope", f"/v1/devices/stream?token={ses}",
                "/v1/review/stream", f"/v1/review/stream?token={dev_token}"):
        with pytest.raises(WebSocketDisconnect), client.websocket_connect(url) as ws:
            ws.receive_json()
    with client.websocket_connect(f"/v1/devices/stream?token={dev_token}") as ws:
        assert ws.receive_json()["type"] == "hello"
    with client.websocket_connect(f"/v1/review/stream?token={ses}") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["role"] == "reviewer"
