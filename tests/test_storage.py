"""Storage on SQLite and Postgres: migrations, episodes, labels, catalogue, frames on disk."""

from __future__ import annotations

from pathlib import Path

from conftest import make_settings
from sqlalchemy import inspect, select

from lookloop.catalog import LabelledImage
from lookloop.config import Settings
from lookloop.domain import CatalogItem
from lookloop.store.db import Database
from lookloop.store.frames import FrameStore
from lookloop.store.tables import AskRow, LabelRow
from lookloop.system import Lookloop


def test_migrations_create_the_tables_and_are_repeatable(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.migrate()  # a second run is a no-op, not an error
    names = set(inspect(db.engine).get_table_names())
    assert {"asks", "labels", "catalog_items", "alembic_version"} <= names
    db.dispose()


def test_episode_label_and_catalogue_round_trip(
    database_url: str, tmp_path: Path, data_dir: Path, model_dir: Path, grocery
) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(var_dir=tmp_path / "var", data_dir=data_dir, model_dir=model_dir, database_url=database_url)
    system = Lookloop(settings)
    system.migrate()
    banana = next(c for c in grocery.classes if c.name == "Banana")
    lime = next(c for c in grocery.classes if c.name == "Lime")
    system.upsert_items(
        [
            CatalogItem(id="banana", name="Banana", price=24.9, images=(str(banana.iconic_image),)),
            CatalogItem(id="lime", name="Lime", price=4.9, barcode="7310865004703", images=(str(lime.iconic_image),)),
        ]
    )
    banana = [LabelledImage(grocery.split("train")[0].path, "Banana")]
    assert system.import_labelled_images(banana, source="import") == 1
    assert system.import_labelled_images(banana, source="import") == 0
    system.build_identify()
    photo = next(i for i in grocery.split("val") if i.label == "Lime").path.read_bytes()
    record = system.ask("what is this?", photo, device_id="glasses-1")
    assert record.frame_sha is not None
    # Frames are files beside the database (content-addressed), stored after redaction: a JPEG of the same size.
    stored = system.frame_bytes(record.frame_sha)
    assert stored[:3] == b"\xff\xd8\xff" and system.frames.path(record.frame_sha).is_file()
    from lookloop.imaging import decode_image

    original = decode_image(photo, max_bytes=1 << 30, max_pixels=1 << 30)
    assert decode_image(stored, max_bytes=1 << 30, max_pixels=1 << 30).rgb.shape == original.rgb.shape
    labelled = system.add_label(record.id, "lime", source="human", author="rita")
    assert labelled.final_answer is not None and labelled.final_answer.startswith("Lime")
    with system.db.session() as s:
        row = s.get(AskRow, record.id)
        assert row is not None and row.device_id == "glasses-1" and row.outcome == "human_answered"
        labels = s.scalars(select(LabelRow).where(LabelRow.ask_id == record.id)).all()
        assert [(lab.value, lab.source, lab.author) for lab in labels] == [("Lime", "human", "rita")]
    item = system.get_item("lime")
    assert item.barcode == "7310865004703" and item.price == 4.9
    system.db.dispose()


def test_frame_store_is_content_addressed(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    sha = store.put(b"abc")
    assert store.put(b"abc") == sha
    assert store.get(sha) == b"abc" and store.exists(sha)
    assert store.delete(sha) and not store.exists(sha)
    try:
        store.get("../../etc/passwd")
    except ValueError:
        pass
    else:  # pragma: no cover
        raise AssertionError("path traversal must be refused")


# -- private files under var/ -------------------------------------------------------------------------------

def _loose(root: Path) -> list[str]:
    """Everything under ``root`` that someone other than its owner could read (or enter)."""
    import stat

    loose = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode & 0o077 or (path.is_dir() and mode != want):
            loose.append(f"{path.relative_to(root)} {mode:o}")
    return loose


def test_everything_under_var_is_private_whatever_the_umask(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    """The database and its WAL, frames (redacted, sealed, originals), the key and caches: 0600 in 0700."""
    import os

    import cv2
    import numpy as np

    from lookloop.domain import Consent
    from lookloop.imaging import decode_image
    from lookloop.loop.learner import LinearHead
    from lookloop.models.embcache import EmbeddingCache
    from lookloop.store.frames import frame_id
    from lookloop.system import Lookloop

    old = os.umask(0o022)  # the usual default: files 0644, directories 0755 unless created privately
    try:
        settings = make_settings(tmp_path, data_dir, model_dir, redact_text="sync")
        system = Lookloop(settings)
        system.migrate()
        ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
        assert ok
        frame = decode_image(bytes(jpeg), max_bytes=1 << 20, max_pixels=1 << 20)
        consent = Consent(store_frames=True, keep_originals=True)
        assert system.privacy.store(frame, frame_id=frame_id("w", frame.data), wearer_id="w", consent=consent,
                                    needs_human=True)
        settings.redact_text = "background"  # a second upload waits sealed for the worker
        ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 64, np.uint8))
        frame = decode_image(bytes(jpeg), max_bytes=1 << 20, max_pixels=1 << 20)
        sealed = system.privacy.store(frame, frame_id=frame_id("w", frame.data), wearer_id="w", consent=consent,
                                      needs_human=True)
        assert sealed is not None and system.privacy.sealed_path(sealed).exists()
        # Caches derived from wearers' frames and labels, written where the model cache would be.
        caches = settings.resolved_var_dir / "models"
        cache = EmbeddingCache(caches, "test-version", 4)
        cache.put("a" * 64, np.ones(4, np.float32))
        cache.save()
        LinearHead(("a", "b"), np.zeros((2, 4), np.float32), np.zeros(2, np.float32)).save(caches / "head.npz")
        var = settings.resolved_var_dir
        names = {p.name for p in var.rglob("*")}
        assert {"lookloop.db", "lookloop.db-wal", "frame.key"} <= names
        assert any(n.endswith(".sealed") for n in names) and any(n.endswith(".orig") for n in names)
        assert system.privacy.flush()  # the sealed upload's redaction worker is done (and wrote privately too)
        assert _loose(var) == []
        system.db.dispose()
    finally:
        os.umask(old)


def test_an_existing_loose_var_is_tightened(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    """An installation from before: its directory, database and key are made private on the next start."""
    import os

    from lookloop.privacy.crypto import load_or_create_key
    from lookloop.system import Lookloop

    settings = make_settings(tmp_path, data_dir, model_dir)
    var = settings.resolved_var_dir
    var.mkdir(parents=True)
    (var / "lookloop.db").touch()
    load_or_create_key(var / "keys")
    for path, mode in ((var, 0o755), (var / "lookloop.db", 0o644), (var / "keys", 0o755),
                       (var / "keys" / "frame.key", 0o644)):
        os.chmod(path, mode)
    system = Lookloop(settings)
    system.migrate()
    system.privacy.key  # noqa: B018 - loads the key
    assert _loose(var) == []
    system.db.dispose()


def test_upgrading_moves_keys_to_scoped_receipts_and_keeps_one_answer_each(database_url: str) -> None:
    """A database made before receipts were scoped (and before answers were unique) upgrades in place."""
    from alembic import command
    from sqlalchemy import text

    from lookloop.store.db import alembic_config
    from lookloop.store.tables import IdempotencyRow

    db = Database(database_url)
    cfg = alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        for head in ("0003_review_reason", "0102_loop_audit", "m001_memory", "p001_privacy"):
            command.upgrade(cfg, head)
    now = "2024-05-01 10:00:00+00:00"
    with db.engine.begin() as conn:
        for ask_id, device, key in (("a1", "dev-a", "k-1"), ("a2", "anonymous", "k-2"), ("a3", "dev-b", None)):
            conn.execute(text(
                "INSERT INTO asks (id, device_id, question, idempotency_key, created_at, skill, answer_text, "
                "confidence, decision, policy, model_version, result, candidates, outcome, latency_ms) VALUES "
                "(:id, :dev, 'what is this?', :key, :now, 'identify', 'Banana', 0.9, 'answer', '', '', '{}', '[]', "
                "'answered', 1.0)"), {"id": ask_id, "dev": device, "key": key, "now": now})
        conn.execute(text("INSERT INTO feedback (id, ask_id, device_id, verdict, implicit, created_at) VALUES "
                          "('f1', 'a1', 'dev-a', 'right', false, :now)"), {"now": now})
        for key, kind, result in (("feedback:fb-1", "feedback", "f1"), ("label:lb-1", "label", "a1")):
            conn.execute(text("INSERT INTO idempotency_keys (key, kind, result_id, created_at) VALUES "
                              "(:key, :kind, :result, :now)"), {"key": key, "kind": kind, "result": result, "now": now})
        conn.execute(text(
            "INSERT INTO review_items (id, ask_id, kind, question, skill, ai_answer, ai_label, confidence, "
            "candidates, live, priority, status, needed, created_at) VALUES ('i1', 'a1', 'ask', 'q', 'identify', "
            "'', '', 0.1, '[]', false, 0.5, 'resolved', 1, :now)"), {"now": now})
        for answer_id, action, at in (("r1", "answer", "2024-05-01 10:00:01+00:00"),
                                      ("r2", "answer", "2024-05-01 10:00:02+00:00"),
                                      ("r3", "skip", "2024-05-01 10:00:03+00:00"),
                                      ("r4", "skip", "2024-05-01 10:00:04+00:00")):
            conn.execute(text(
                "INSERT INTO review_answers (id, item_id, account_id, action, value, duration_ms, gold, created_at) "
                "VALUES (:id, 'i1', 'acc-1', :action, 'Banana', 0, false, :at)"),
                {"id": answer_id, "action": action, "at": at})

    db.migrate()

    with db.session() as s:
        receipts = {(r.caller, r.kind, r.key): (r.result_id, r.fingerprint) for r in s.scalars(select(IdempotencyRow))}
        answers = sorted(s.scalars(text("SELECT id FROM review_answers")).all())
    # The device's ask key and feedback receipt are theirs now; anonymous and unattributable keys are gone.
    assert receipts == {("device:dev-a", "ask", "k-1"): ("a1", None),
                        ("device:dev-a", "feedback", "fb-1"): ("f1", None)}
    assert answers == ["r1", "r3", "r4"]  # the reviewer's second answer went; skips repeat freely
    db.dispose()
