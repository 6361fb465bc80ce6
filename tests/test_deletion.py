"""Delete my data, end to end: episodes, frames, memory, labels, embeddings gone; models marked; others kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from privacy_util import add_device, face_photo, product_photo, system_for
from sqlalchemy import func, select

from lookloop.catalog import GroceryDataset
from lookloop.privacy.tables import AuditRow, RedactionRow
from lookloop.store.tables import AskRow, LabelRow


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset) -> Any:
    s = system_for(tmp_path, data_dir, model_dir, grocery, confidence_threshold=0.0)
    yield s
    s.privacy.flush()
    s.db.dispose()


def _count(system: Any, stmt: Any) -> int:
    with system.db.session() as s:
        return int(s.scalar(stmt) or 0)


def _fill(system: Any, grocery: GroceryDataset, device: str, label: str, n: int) -> list[Any]:
    from lookloop.memory.store import MemoryStore

    records = []
    for i in range(n):
        r = system.ask("what is this?", product_photo(grocery, label, i), device_id=device)
        system.add_label(r.id, label, source="human")
        records.append(r)
    MemoryStore(system.db).add(device_id=device, note="keys on the shelf", frame_sha=records[0].frame_sha)
    return records


def test_delete_my_data_end_to_end(system: Any, grocery: GroceryDataset) -> None:
    from lookloop.memory.store import MemoryStore

    a_dev, a_wearer, _ = add_device(system, "ann")
    a_dev2, _, _ = add_device(system, "ann")  # a second pair of glasses, same wearer
    b_dev, _, _ = add_device(system, "bob")
    system.consent.set(a_wearer, keep_originals=True)
    mine = _fill(system, grocery, a_dev, "Banana", 2)
    mine.append(system.ask("what is this?", face_photo(), device_id=a_dev2))
    theirs = _fill(system, grocery, b_dev, "Cucumber", 2)
    system.privacy.flush()
    serving = system.model_version
    my_shas = [r.frame_sha for r in mine]
    # Stored redacted, or still sealed (encrypted) when nobody has needed to see it yet.
    assert all(system.privacy.path(s).exists() or system.privacy.sealed_path(s).exists() for s in my_shas)
    assert system.privacy.original_path(my_shas[0]).exists()
    assert system.serving.cached_embedding(my_shas[0]) is not None
    assert f"ask:{mine[0].id}" in system.identify_model.memory.keys

    report = system.deletion.delete_wearer_data(a_wearer, actor="test")

    assert report.asks == 3 and report.labels == 2 and report.memory_entries == 1
    assert sorted(report.devices) == sorted({a_dev, a_dev2, a_wearer})
    ids = [r.id for r in mine]
    assert _count(system, select(func.count()).select_from(AskRow).where(AskRow.id.in_(ids))) == 0
    assert _count(system, select(func.count()).select_from(LabelRow).where(LabelRow.ask_id.in_(ids))) == 0
    in_mine = RedactionRow.frame_sha.in_(my_shas)
    assert _count(system, select(func.count()).select_from(RedactionRow).where(in_mine)) == 0
    for sha in my_shas:
        assert not system.privacy.path(sha).exists() and not system.privacy.original_path(sha).exists()
        assert not system.privacy.sealed_path(sha).exists()
        assert system.serving.cached_embedding(sha) is None
    assert MemoryStore(system.db).for_device(a_dev) == []
    keys = set(system.identify_model.memory.keys)
    assert not any(f"ask:{i}" in keys for i in ids)
    # The model that learned from them is marked; the next build leaves them out.
    assert serving in system.deletion.marked_model_versions() and serving in report.models_marked
    _, _, label_keys = system.labelled_images()
    assert not any(f"ask:{i}" in label_keys for i in ids)
    assert not any(f"ask:{i}" in system.build_identify().memory.keys for i in ids)
    # Bob keeps everything.
    for r in theirs:
        assert system.get_ask(r.id).outcome == "human_answered"
        assert system.privacy.path(r.frame_sha).exists()
    assert f"ask:{theirs[0].id}" in system.identify_model.memory.keys
    assert len(MemoryStore(system.db).for_device(b_dev)) == 1
    # The wearer's devices still work, and the deletion is in the audit log.
    assert system.ask("what is this?", product_photo(grocery), device_id=a_dev).id
    with system.db.session() as s:
        actions = list(s.scalars(select(AuditRow.action).where(AuditRow.target == f"wearer:{a_wearer}")))
    assert "privacy.delete_wearer_data" in actions


def test_delete_my_data_over_http(system: Any, grocery: GroceryDataset) -> None:
    from lookloop.server.app import create_app

    a_dev, _, a_token = add_device(system, "ann")
    b_dev, _, b_token = add_device(system, "bob")
    with TestClient(create_app(system=system, warm=False)) as client:
        def ask(token: str, i: int) -> str:
            r = client.post("/v1/asks", data={"question": "what is this?"},
                            files={"image": ("x.jpg", product_photo(grocery, "Banana", i))},
                            headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            return str(r.json()["id"])

        mine, theirs = ask(a_token, 0), ask(b_token, 1)
        assert client.delete("/v1/me/data").status_code == 401
        r = client.delete("/v1/me/data", headers={"Authorization": f"Bearer {a_token}"})
        assert r.status_code == 200, r.text
        assert r.json()["asks"] == 1
        with system.db.session() as s:
            left = set(s.scalars(select(AskRow.id)))
        assert mine not in left and theirs in left
        consent = client.put("/v1/me/consent", json={"training_use": False},
                             headers={"Authorization": f"Bearer {b_token}"})
        assert consent.status_code == 200 and consent.json()["training_use"] is False
        assert client.put("/v1/me/consent", json={"nonsense": True},
                          headers={"Authorization": f"Bearer {b_token}"}).status_code == 422
        assert system.consent.for_device(b_dev).training_use is False
        assert system.consent.for_device(a_dev).training_use is True


def test_deletion_reaches_every_derived_store(system: Any, grocery: GroceryDataset) -> None:
    """Router corrections, idempotency receipts, audit references and marked versions (each missed before)."""
    from lookloop.loop.registry import GateRefused
    from lookloop.loop.training import train_versions
    from lookloop.privacy import audit
    from lookloop.privacy.deletion import pseudonym
    from lookloop.store.idempotency import Key
    from lookloop.store.tables import IdempotencyRow

    a_dev, a_wearer, _ = add_device(system, "ann")
    b_dev, _, _ = add_device(system, "bob")
    secret = "my locker code is 4242, what is this"
    said = system.ask(secret, product_photo(grocery, "Banana", 0), device_id=a_dev, skill="identify")
    system.correct_route(secret, "identify")  # the router now remembers her words
    system.add_label(said.id, "Banana", source="human", idempotency_key=Key("account:rev-1", "ann-label-1"))
    system.ask("what is this?", None, device_id=a_dev, skill="notes", idempotency_key=Key(f"device:{a_dev}", "k-1"))
    hers = [said.id]
    for label, i in (("Banana", 1), ("Banana", 2), ("Granny-Smith", 0)):
        r = system.ask("what is this?", product_photo(grocery, label, i), device_id=a_dev)
        system.add_label(r.id, label, source="human")
        hers.append(r.id)
    theirs = system.ask("what is this?", product_photo(grocery, "Cucumber", 0), device_id=b_dev)
    system.add_label(theirs.id, "Cucumber", source="human")
    audit.record(system.db, actor="op", role="operator", action="privacy.reveal", target=f"ask:{said.id}",
                 path=f"/v1/asks/{said.id}/frame/original")
    trained = train_versions(system.serving, holdout=0.3, promote=False).versions[0]
    # (a held-out label is drawn by a hash of the ask's id: at least one of hers is among the trained ones)
    assert {f"ask:{a}" for a in hers} & set(system.registry.label_keys(trained.id))
    corrections = system.routing.corrections_path

    def remembered() -> str:
        with np.load(corrections, allow_pickle=False) as saved:
            return bytes(saved["meta"]).decode()

    assert secret in remembered()

    report = system.deletion.delete_wearer_data(a_wearer, actor="test")

    assert report.router_corrections == 1 and secret not in remembered()
    with system.db.session() as s:
        assert s.scalars(select(IdempotencyRow).where(IdempotencyRow.key.in_(("ann-label-1", "k-1")))).all() == []
        rows = s.scalars(select(AuditRow).where(AuditRow.action == "privacy.reveal")).all()
    assert rows and all(said.id not in r.target and said.id not in str(r.detail) for r in rows)
    assert rows[0].target == f"ask:{pseudonym(said.id)}"  # what happened stays on record, pointing nowhere
    assert trained.id in report.models_marked and trained.id in system.deletion.marked_model_versions()
    with pytest.raises(GateRefused, match="deleted"):
        system.registry.promote(trained.id, force=True)  # not even force serves a version trained on it
    assert system.get_ask(theirs.id).outcome == "human_answered"  # other wearers keep theirs
