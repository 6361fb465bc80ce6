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
