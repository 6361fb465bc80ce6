"""The HTTP access policy (server/policies.py): the rules that read state, the review queue and reveal grants.

The authorisation matrix (tests/test_authz_matrix.py) covers refusals over every endpoint; this covers the
way in for a reviewer an operator granted the reveal permission, and the queries the policy relies on.
"""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from privacy_util import add_device, face_photo, system_for
from sqlalchemy import select

from lookloop.catalog import GroceryDataset
from lookloop.humans.accounts import Accounts
from lookloop.privacy.tables import AuditRow, RevealGrantRow
from lookloop.server.app import create_app


def test_a_granted_reviewer_reveals_a_queued_original_and_it_is_audited(
    tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset
) -> None:
    system = system_for(tmp_path, data_dir, model_dir, grocery, confidence_threshold=1.0, redact_text="sync",
                        rate_limit_device_per_min=0, rate_limit_account_per_min=0)
    try:
        _, wearer, device_token = add_device(system, "ann")
        system.consent.set(wearer, keep_originals=True)
        accounts = Accounts(system.db)
        granted, _ = accounts.add_account("granted", "reviewer", "granted-password-1")
        plain, _ = accounts.add_account("plain", "reviewer", "plain-password-1")
        with system.db.session() as s:
            s.add(RevealGrantRow(account_id=granted.id, granted_by="test"))
        upload = face_photo()
        with TestClient(create_app(system=system, warm=False)) as client:
            r = client.post("/v1/asks", data={"question": "what is this?", "skill": "identify"},
                            files={"image": ("x.jpg", upload)}, headers={"Authorization": f"Bearer {device_token}"})
            assert r.status_code == 200, r.text
            ask_id = r.json()["id"]
            assert system.humans.queue.is_open_for_ask(ask_id)
            assert not system.humans.queue.is_open_for_ask("does-not-exist")
            assert system.privacy.reveal_granted(granted.id)

            item = system.humans.queue.for_ask(ask_id)
            assert item is not None

            def reveal(username: str, password: str) -> tuple[int, int]:
                """(before claiming the ask's item, while holding it)"""
                headers = {"Authorization": f"Bearer {accounts.login(username, password)[0]}"}
                url = f"/v1/privacy/asks/{ask_id}/original"
                before = client.get(url, headers=headers).status_code
                assert client.post(f"/v1/review/items/{item.id}/claim", headers=headers).status_code == 200
                r = client.get(url, headers=headers)
                if r.status_code == 200:
                    assert r.content == upload and r.headers["cache-control"] == "no-store"
                assert client.post(f"/v1/review/items/{item.id}/release", headers=headers).status_code == 204
                return before, r.status_code

            assert reveal("plain", "plain-password-1") == (403, 403)
            assert reveal("granted", "granted-password-1") == (404, 200)  # only of an item they hold
        with system.db.session() as s:
            actions = [(row.action, row.actor) for row in s.scalars(select(AuditRow).where(
                AuditRow.target == f"ask:{ask_id}"))]
        assert ("privacy.reveal_denied", f"account:{plain.id}(plain)") in actions
        assert ("privacy.reveal", f"account:{granted.id}(granted)") in actions
    finally:
        system.privacy.flush()
        system.db.dispose()
