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


# -- sign-in back-off -----------------------------------------------------------------------------------------

def test_login_backoff_doubles_is_capped_resets_on_success_and_forgets(system: Lookloop) -> None:
    from lookloop.humans.login_throttle import BackoffPolicy, LoginThrottle

    now = [dt.datetime(2025, 1, 1, tzinfo=dt.UTC)]
    throttle = LoginThrottle(system.db, BackoffPolicy(per_account=5, per_address=20, base_s=1.0, max_s=60.0),
                             clock=lambda: now[0])
    waits = []
    for _ in range(12):
        assert throttle.retry_after("rita", "203.0.113.9") == 0.0 or waits
        throttle.failed("rita", "203.0.113.9")
        waits.append(throttle.retry_after("rita", "203.0.113.9"))
        now[0] += dt.timedelta(seconds=waits[-1])  # the attacker waits exactly as long as told
    assert waits[:4] == [0.0] * 4
    assert waits[4:] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    # Per username: another name from another address is not slowed by rita's failures.
    assert throttle.retry_after("otto", "198.51.100.1") == 0.0
    # A success clears the counters.
    throttle.succeeded("rita", "203.0.113.9")
    throttle.failed("rita", "203.0.113.9")
    assert throttle.retry_after("rita", "203.0.113.9") == 0.0
    # Failures a day old are forgotten.
    for _ in range(5):
        throttle.failed("sam", None)
    assert throttle.retry_after("sam", None) > 0
    now[0] += dt.timedelta(days=1, seconds=1)
    assert throttle.retry_after("sam", None) == 0.0
    throttle.failed("sam", None)
    assert throttle.retry_after("sam", None) == 0.0  # counting starts afresh


def test_failed_sign_ins_back_off_per_account_over_http(client: TestClient, system: Lookloop) -> None:
    from lookloop.humans.login_throttle import BackoffPolicy

    system.humans.accounts.add_account("rita", "reviewer", "correct horse")
    client.app.state.rate_limiter.per_minute["ip"] = 0  # the sign-in back-off alone, not the request rate
    # A first wait long enough that the 120 tries surely fall inside it, however slow the machine.
    system.humans.accounts.throttle.policy = BackoffPolicy(per_account=5, per_address=200, base_s=60.0)
    codes = [client.post("/v1/auth/login", json={"username": "rita", "password": f"guess-{i}"}).status_code
             for i in range(120)]
    assert codes[:5] == [401] * 5
    assert set(codes[5:]) == {429}  # refused unchecked from the sixth try on
    refused = client.post("/v1/auth/login", json={"username": "rita", "password": "correct horse"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1  # even the right password
    assert "too many failed sign-ins" in refused.json()["detail"]


def test_backoff_is_shared_by_workers_and_cleared_by_a_success(system: Lookloop) -> None:
    from lookloop.errors import TooManyRequests
    from lookloop.humans.login_throttle import BackoffPolicy, LoginThrottle

    system.humans.accounts.add_account("rita", "reviewer", "correct horse")
    policy = BackoffPolicy(per_account=3, per_address=10, base_s=0.2, max_s=0.2)
    worker_a = Accounts(system.db, throttle=LoginThrottle(system.db, policy))
    worker_b = Accounts(system.db, throttle=LoginThrottle(system.db, policy))  # another process, same database
    for worker in (worker_a, worker_b, worker_a):
        with pytest.raises(Unauthorized):
            worker.login("rita", "wrong password", address="203.0.113.9")
    with pytest.raises(TooManyRequests) as refused:
        worker_b.login("rita", "correct horse", address="198.51.100.1")
    assert refused.value.retry_after >= 1
    import time

    time.sleep(0.25)
    assert worker_b.login("rita", "correct horse", address="198.51.100.1")[1].username == "rita"
    with pytest.raises(Unauthorized):  # the success reset the count: one more failure is a plain 401
        worker_a.login("rita", "wrong password", address="203.0.113.9")


def test_failed_sign_ins_back_off_per_address(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    """Guessing many usernames from one address is slowed there; people behind other addresses are not."""
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir, trusted_proxies=["10.0.0.0/8"],
                               login_failures_per_address=10, rate_limit_anonymous_per_min=0))
    s.migrate()
    s.humans.accounts.add_account("rita", "reviewer", "correct horse")
    with TestClient(create_app(system=s, warm=False), client=("10.0.0.5", 4000)) as proxied:
        def login(user: str, password: str, address: str) -> int:
            return proxied.post("/v1/auth/login", json={"username": user, "password": password},
                                headers={"X-Forwarded-For": address}).status_code

        codes = [login(f"user{i}", "some password", "203.0.113.9") for i in range(12)]
        assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]
        assert login("rita", "correct horse", "203.0.113.9") == 429
        assert login("rita", "correct horse", "198.51.100.1") == 200
    s.db.dispose()


def test_parallel_failures_are_all_counted(system: Lookloop) -> None:
    """Workers failing at once each add one: the count is an atomic upsert, not read-then-write."""
    from concurrent.futures import ThreadPoolExecutor

    from lookloop.humans.login_throttle import BackoffPolicy, LoginThrottle

    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    throttle = LoginThrottle(system.db, BackoffPolicy(per_account=5, base_s=1.0, max_s=10_000.0), clock=lambda: at)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: throttle.failed("rita", None), range(16)))
    assert throttle.retry_after("rita", None) == 2.0 ** (16 - 5)
