"""Token-bucket rate limits per device, per account and per address; operators' writes are audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from privacy_util import add_device, system_for
from sqlalchemy import select

from lookloop.catalog import GroceryDataset
from lookloop.privacy.tables import AuditRow
from lookloop.server.ratelimit import RateLimiter


def test_bucket_allows_a_burst_then_refills() -> None:
    limiter = RateLimiter({"device": 60.0, "account": 0.0, "ip": 6.0}, burst=3)
    assert [limiter.check("device", "a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.check("device", "a", now=0.0)
    assert 0 < wait <= 1.0
    assert limiter.check("device", "b", now=0.0) == 0.0  # buckets are per key
    assert limiter.check("device", "a", now=1.01) == 0.0  # one token per second at 60/min
    assert all(limiter.check("account", "x", now=0.0) == 0.0 for _ in range(100))  # 0 turns it off
    for _ in range(3):
        limiter.check("ip", "1.2.3.4", now=0.0)
    assert limiter.check("ip", "1.2.3.4", now=0.0) > 5  # 6/min: about 10 s per token


def test_limits_over_http_per_device_and_audit(tmp_path: Path, data_dir: Path, model_dir: Path,
                                               grocery: GroceryDataset) -> None:
    from lookloop.humans.accounts import Accounts
    from lookloop.server.app import create_app

    system: Any = system_for(tmp_path, data_dir, model_dir, grocery, rate_limit_device_per_min=6,
                             rate_limit_burst=3, rate_limit_anonymous_per_min=0, rate_limit_account_per_min=0)
    _, _, token_a = add_device(system, "ann")
    _, _, token_b = add_device(system, "bob")
    accounts = Accounts(system.db)
    accounts.add_account("op", "operator", "op-password-1")
    op_token = accounts.login("op", "op-password-1")[0]
    with TestClient(create_app(system=system, warm=False)) as client:
        codes = [client.get("/v1/asks", headers={"Authorization": f"Bearer {token_a}"}).status_code
                 for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = client.get("/v1/asks", headers={"Authorization": f"Bearer {token_a}"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "too many requests" in limited.json()["detail"]
        assert client.get("/v1/asks", headers={"Authorization": f"Bearer {token_b}"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        # An operator's destructive request is audited by the middleware.
        r = client.post("/v1/privacy/purge", headers={"Authorization": f"Bearer {op_token}"})
        assert r.status_code == 200, r.text
    with system.db.session() as s:
        rows = s.scalars(select(AuditRow).where(AuditRow.action == "http.POST")).all()
        assert any(row.target == "/v1/privacy/purge" and row.role == "operator" for row in rows)
    system.db.dispose()


# -- client addresses ---------------------------------------------------------------------------------------

def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    from lookloop.server.clients import forwarded_client, trusted_networks

    none = trusted_networks(())
    ours = trusted_networks(("10.0.0.0/8", "192.0.2.7"))
    # No trusted proxies: the header is whatever the client says, so it is ignored.
    assert forwarded_client("198.51.100.1", ["203.0.113.9"], none) == "198.51.100.1"
    # A peer that is not our proxy: ignored too.
    assert forwarded_client("198.51.100.1", ["203.0.113.9"], ours) == "198.51.100.1"
    # Behind our proxy: the hop it appended, whatever the client put to its left.
    assert forwarded_client("10.0.0.2", ["203.0.113.9"], ours) == "203.0.113.9"
    assert forwarded_client("10.0.0.2", ["6.6.6.6, 203.0.113.9"], ours) == "203.0.113.9"
    assert forwarded_client("10.0.0.2", ["6.6.6.6", "203.0.113.9"], ours) == "203.0.113.9"  # repeated headers
    # A chain of our proxies is skipped from the right.
    assert forwarded_client("10.0.0.2", ["6.6.6.6, 203.0.113.9, 192.0.2.7, 10.1.1.1"], ours) == "203.0.113.9"
    # Every hop ours: the left-most; no header: the proxy itself.
    assert forwarded_client("10.0.0.2", ["10.9.9.9, 10.1.1.1"], ours) == "10.9.9.9"
    assert forwarded_client("10.0.0.2", [], ours) == "10.0.0.2"
    # Garbage our proxies did not write: the nearest readable hop is the client.
    assert forwarded_client("10.0.0.2", ["203.0.113.9, not-an-ip"], ours) == "10.0.0.2"
    # Ports and IPv4-mapped IPv6 are normalised.
    assert forwarded_client("::ffff:10.0.0.2", ["203.0.113.9:5555"], ours) == "203.0.113.9"
    assert forwarded_client("10.0.0.2", ["[2001:db8::1]:443"], ours) == "2001:db8::1"


def _light_system(tmp_path: Path, data_dir: Path, model_dir: Path, **overrides: Any) -> Any:
    from conftest import make_settings

    from lookloop.system import Lookloop

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir, **overrides))
    system.migrate()
    return system


def test_a_spoofed_forwarded_for_buys_no_fresh_bucket_under_the_real_server(
    tmp_path: Path, data_dir: Path, model_dir: Path
) -> None:
    """As `lookloop serve` runs it (uvicorn on loopback): every request names another X-Forwarded-For, all
    share the one bucket of the address they really come from."""
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from lookloop.cli.serve import server_options
    from lookloop.server.app import create_app

    system = _light_system(tmp_path, data_dir, model_dir, rate_limit_anonymous_per_min=6, rate_limit_burst=3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(system=system, warm=False), host="127.0.0.1", port=port,
                                           **server_options()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        codes = [httpx.get(f"http://127.0.0.1:{port}/v1/auth/me",
                           headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(6)]
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429, 429]
    finally:
        server.should_exit = True
        thread.join(15)
        system.db.dispose()


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(
    tmp_path: Path, data_dir: Path, model_dir: Path
) -> None:
    from lookloop.server.app import create_app

    system = _light_system(tmp_path, data_dir, model_dir, rate_limit_anonymous_per_min=6, rate_limit_burst=2,
                           trusted_proxies=["10.0.0.0/8"])
    app = create_app(system=system, warm=False)

    def me(client: TestClient, forwarded: str) -> int:
        return client.get("/v1/auth/me", headers={"X-Forwarded-For": forwarded}).status_code

    with TestClient(app, client=("10.0.0.5", 4000)) as proxied:
        assert [me(proxied, "203.0.113.9") for _ in range(3)] == [401, 401, 429]
        assert me(proxied, "6.6.6.6, 203.0.113.9") == 429  # what the client wrote to the left changes nothing
        assert me(proxied, "203.0.113.10") == 401  # another client behind the proxy
    with TestClient(app, client=("198.51.100.3", 4000)) as direct:
        # Not our proxy: its header is ignored, so it cannot pose as a fresh client either.
        assert [me(direct, f"203.0.113.{20 + i}") for i in range(3)] == [401, 401, 429]
    system.db.dispose()
