"""Consent per wearer, enforced in the review queue, training, exports and frame storage; redaction wiring."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from privacy_util import add_device, face_photo, product_photo, receipt_photo, system_for

from lookloop.catalog import GroceryDataset
from lookloop.domain import NO_REVIEW_NOTE, Consent, Decision
from lookloop.privacy.consent import DEFAULT, exportable_ask_ids, training_excluded_ask_ids
from lookloop.privacy.tables import RedactionRow


@pytest.fixture
def unsure(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset) -> Any:
    """A system that escalates everything (threshold above any confidence)."""
    system = system_for(tmp_path, data_dir, model_dir, grocery, confidence_threshold=1.0)
    yield system
    system.privacy.flush()
    system.db.dispose()


@pytest.fixture
def sure(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset) -> Any:
    system = system_for(tmp_path, data_dir, model_dir, grocery, confidence_threshold=0.0)
    yield system
    system.privacy.flush()
    system.db.dispose()


def test_defaults_and_partial_updates(sure: Any) -> None:
    assert DEFAULT == Consent(store_frames=True, keep_originals=False, human_review=True, training_use=True,
                              memory=True)
    device, wearer, _ = add_device(sure, "ann")
    assert sure.consent.for_device(device) == DEFAULT
    sure.consent.set(wearer, training_use=False)
    changed = sure.consent.set(wearer, memory=False, human_review=None)
    assert changed == Consent(training_use=False, memory=False)
    # The device speaks for its wearer; another wearer is untouched.
    assert sure.consent.for_device(device) == changed
    other, _, _ = add_device(sure, "bob")
    assert sure.consent.for_device(other) == DEFAULT
    with pytest.raises(ValueError):
        sure.consent.set("anonymous", memory=False)


def test_no_review_consent_is_never_queued_and_the_wearer_is_told(unsure: Any, grocery: GroceryDataset) -> None:
    escalated: list[str] = []
    unsure.hooks.escalated.append(lambda r: escalated.append(r.id))
    device, wearer, _ = add_device(unsure, "ann")
    asked = unsure.ask("what is this?", product_photo(grocery), device_id=device)
    assert asked.answer.decision == Decision.ESCALATE and escalated == [asked.id]

    unsure.consent.set(wearer, human_review=False)
    record = unsure.ask("what is this?", product_photo(grocery, i=1), device_id=device)
    assert record.answer.decision == Decision.ANSWER
    assert record.outcome == "answered"
    assert NO_REVIEW_NOTE in record.answer.text
    assert escalated == [asked.id]  # the second ask reached no hook, hence no queue
    from sqlalchemy import inspect, select

    with unsure.db.session() as s:
        if inspect(s.get_bind()).has_table("review_items"):
            from lookloop.humans.tables import ReviewItemRow

            queued = set(s.scalars(select(ReviewItemRow.ask_id)))
            assert record.id not in queued


def test_training_consent_keeps_episodes_out_of_learning_and_exports(sure: Any, grocery: GroceryDataset) -> None:
    yes_dev, _, _ = add_device(sure, "yes")
    no_dev, no_wearer, _ = add_device(sure, "no")
    sure.consent.set(no_wearer, training_use=False)
    kept = sure.ask("what is this?", product_photo(grocery, "Banana", 0), device_id=yes_dev)
    left = sure.ask("what is this?", product_photo(grocery, "Banana", 1), device_id=no_dev)
    sure.add_label(kept.id, "Banana", source="human")
    sure.add_label(left.id, "Banana", source="human")

    memory_keys = set(sure.identify_model.memory.keys)
    assert f"ask:{kept.id}" in memory_keys and f"ask:{left.id}" not in memory_keys
    _, _, keys = sure.labelled_images()
    assert f"ask:{kept.id}" in keys and f"ask:{left.id}" not in keys
    rebuilt = sure.build_identify()
    assert f"ask:{left.id}" not in rebuilt.memory.keys
    with sure.db.session() as s:
        assert training_excluded_ask_ids(s) == {left.id}
        allowed = exportable_ask_ids(s)
    assert kept.id in allowed and left.id not in allowed
    from lookloop.exports.episodes import load_episodes

    exported = {e.ask_id for e in load_episodes(sure)}
    assert kept.id in exported and left.id not in exported


def test_stored_frame_is_redacted_and_recorded(sure: Any) -> None:
    upload = face_photo()
    record = sure.ask("what is this?", upload, device_id="cam-1")
    assert record.frame_sha
    sure.privacy.flush()
    stored = sure.frame_bytes(record.frame_sha)
    assert stored != upload and stored[:3] == b"\xff\xd8\xff"
    info = sure.privacy.info(record.frame_sha)
    assert info is not None and info.stage == "full"
    assert any(r["kind"] == "face" for r in info.regions)
    assert "faces=" in info.model_version and "text=" in info.model_version
    # No original without consent.
    assert not info.original_kept and not sure.privacy.original_path(record.frame_sha).exists()


def test_personal_text_is_masked_before_a_person_sees_the_frame(sure: Any) -> None:
    record = sure.ask("what is this?", receipt_photo(), device_id="cam-1", skill="identify")
    assert record.frame_sha
    # Whether or not the worker got there first, reading for a person runs the text pass.
    sure.frame_bytes(record.frame_sha)
    info = sure.privacy.info(record.frame_sha)
    assert info is not None and info.stage == "full"
    kinds = {r["kind"] for r in info.regions}
    assert {"email", "card"} <= kinds


def test_originals_only_with_consent_encrypted_and_purged(sure: Any) -> None:
    device, wearer, _ = add_device(sure, "ann")
    sure.consent.set(wearer, keep_originals=True)
    upload = face_photo()
    record = sure.ask("what is this?", upload, device_id=device)
    assert record.frame_sha
    sealed = sure.privacy.original_path(record.frame_sha).read_bytes()
    assert upload not in sealed and sealed[:3] != b"\xff\xd8\xff"
    assert sure.privacy.reveal(record.frame_sha) == upload
    info = sure.privacy.info(record.frame_sha)
    assert info is not None and info.original_expires_at is not None
    days = sure.settings.original_retention_days
    assert sure.privacy.purge().originals == 0  # not expired yet
    later = info.original_expires_at + dt.timedelta(seconds=1)
    assert sure.privacy.purge(now=later).originals == 1
    assert not sure.privacy.original_path(record.frame_sha).exists()
    assert sure.frame_bytes(record.frame_sha)  # the redacted frame stays
    assert days > 0


def test_no_store_consent_keeps_frames_only_while_a_human_must_answer(unsure: Any, grocery: GroceryDataset) -> None:
    device, wearer, _ = add_device(unsure, "ann")
    unsure.consent.set(wearer, store_frames=False)
    record = unsure.ask("what is this?", product_photo(grocery), device_id=device)
    assert record.frame_sha
    unsure.privacy.flush()  # redaction runs in the background; until then the upload is sealed
    assert unsure.privacy.path(record.frame_sha).exists()
    assert not unsure.privacy.sealed_path(record.frame_sha).exists()
    unsure.add_label(record.id, "Banana", source="human")
    assert not unsure.privacy.path(record.frame_sha).exists()
    with unsure.db.session() as s:
        assert s.get(RedactionRow, record.frame_sha) is None
    unsure.consent.set(wearer, human_review=False)
    assert unsure.ask("what is this?", product_photo(grocery, i=1), device_id=device).frame_sha is None


def test_label_idempotency_key_applies_once(sure: Any, grocery: GroceryDataset) -> None:
    from sqlalchemy import func, select

    from lookloop.store.idempotency import Key
    from lookloop.store.tables import LabelRow

    record = sure.ask("what is this?", product_photo(grocery), device_id="cam-1")
    for _ in range(3):
        sure.add_label(record.id, "Banana", source="human", idempotency_key=Key("account:rev-1", "0001"))
    with sure.db.session() as s:
        n = s.scalar(select(func.count()).select_from(LabelRow).where(LabelRow.ask_id == record.id))
    assert n == 1


def test_uploads_stay_sealed_until_redacted(sure: Any, grocery: GroceryDataset) -> None:
    """Redaction off the ask path: nothing unredacted is on disk in the clear, and no read gets the raw upload."""
    upload = product_photo(grocery, i=2)
    sure.privacy._enqueue = lambda sha: None  # hold the worker back: the frame stays sealed
    record = sure.ask("what is this?", upload)
    assert record.frame_sha
    sealed = sure.privacy.sealed_path(record.frame_sha)
    assert sealed.exists() and not sure.privacy.path(record.frame_sha).exists()
    assert upload not in sealed.read_bytes() and sealed.read_bytes()[:3] != b"\xff\xd8\xff"
    info = sure.privacy.info(record.frame_sha)
    assert info is not None and info.stage == "sealed"
    shown = sure.frame_bytes(record.frame_sha)  # a read runs the redaction inline
    assert shown[:3] == b"\xff\xd8\xff" and shown != upload
    assert not sealed.exists()
    info = sure.privacy.info(record.frame_sha)
    assert info is not None and info.stage == "full" and info.model_version


def test_consent_and_originals_are_per_upload_not_per_content(
    tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset
) -> None:
    """The same photo from a wearer who keeps originals and one who does not: only the first's is kept."""
    from privacy_util import add_device, product_photo, system_for

    from lookloop.errors import NotFound

    system = system_for(tmp_path, data_dir, model_dir, grocery)
    keeper_dev, keeper, _ = add_device(system, "kim")
    private_dev, _, _ = add_device(system, "pat")
    system.consent.set(keeper, keep_originals=True)
    photo = product_photo(grocery, "Banana", 0)
    mine = system.ask("what is this?", photo, device_id=keeper_dev)
    theirs = system.ask("what is this?", photo, device_id=private_dev)
    system.privacy.flush()
    assert mine.frame_sha and theirs.frame_sha and mine.frame_sha != theirs.frame_sha
    assert system.privacy.reveal(mine.frame_sha)  # kept: that wearer said yes
    with pytest.raises(NotFound):
        system.privacy.reveal(theirs.frame_sha)  # never the other wearer's upload under someone else's yes
    again = system.ask("what is this?", photo, device_id=private_dev)
    assert again.frame_sha == theirs.frame_sha  # one device sending the same photo again is one frame
    system.deletion.delete_wearer_data(keeper, actor="test")
    assert not system.privacy.original_path(mine.frame_sha).exists()
    assert system.frame_bytes(theirs.frame_sha)  # deleting one wearer leaves the other's frame
    system.privacy.flush()
    system.db.dispose()
