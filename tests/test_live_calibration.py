"""Live calibration: random audit asks, their review, and the serving policy recalibrating on their labels."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_CLASSES, build_small_system, make_settings, small_val
from sqlalchemy import text

from lookloop.catalog import GroceryDataset
from lookloop.domain import AskRecord, Decision, Outcome
from lookloop.humans.accounts import Accounts, Principal
from lookloop.loop.calibration import AUDIT_PRIORITY, draw_audit
from lookloop.loop.figures import loop_figures
from lookloop.loop.learner import train_identify_head
from lookloop.loop.policies import ConformalPolicy, FixedThreshold, PolicyDecision
from lookloop.loop.registry import ModelArtifacts, ModelVersion
from lookloop.store.tables import AskRow
from lookloop.system import Lookloop


@pytest.fixture
def audited(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset,
            database_url: str) -> Iterator[Lookloop]:
    """A small system on SQLite (and Postgres in CI) where every identify ask is an audit ask."""
    settings = make_settings(tmp_path, data_dir, model_dir, database_url=database_url, audit_rate=1.0,
                             calibration_min_labels=4, review_gold_every=0, trust_min_gold_answers=0)
    system = build_small_system(settings, grocery, per_class=6)
    yield system
    system.privacy.flush()  # audit frames are redacted in the background: let the worker finish first
    system.db.dispose()


@pytest.fixture(scope="module")
def photos(grocery: GroceryDataset) -> list[bytes]:
    return [Path(p.path).read_bytes() for p in small_val(grocery, per_class=2)]


def _register(system: Lookloop, scores: np.ndarray, correct: np.ndarray, swap: dict[str, str] | None = None
              ) -> ModelVersion:
    """A registry version with this held-out calibration set (as training stores it)."""
    paths, labels, keys = system.labelled_images()
    labels = [(swap or {}).get(lab, lab) for lab in labels]
    x = system.embedding_cache.embed_files(paths, system.embedder.embed)
    art = ModelArtifacts(train_identify_head(x, labels), system.embedder.version, x, labels, keys,
                         calibration_scores=scores, calibration_correct=correct, calibration_score="margin")
    return system.registry.register(art, metrics={"accuracy": 0.9}, label_keys=keys, label_values=labels,
                                    parent_id=None, kind="head")


def _serve(system: Lookloop, version: ModelVersion) -> None:
    system.registry.promote(version.id, force=True)
    system.activate_version(version.id)


def _row(system: Lookloop, ask_id: str) -> AskRow:
    with system.db.session() as s:
        row = s.get(AskRow, ask_id)
        assert row is not None
        return row


class _AlwaysAsk:
    """Escalates every ask (a hand-set policy: live calibration leaves it alone)."""

    name = "always-ask"

    def decide(self, probs: np.ndarray, group: str | None = None) -> PolicyDecision:
        return PolicyDecision(Decision.ESCALATE, float(np.max(probs)), 1.0, self.name)

    def calibrate(self, scores: np.ndarray, correct: np.ndarray, groups: Sequence[str] | None = None) -> None:
        pass


def _wrong(record: AskRecord) -> str:
    return next(c for c in SMALL_CLASSES if c != record.answer.result["label"])


# All correct, all sure: alone it certifies every threshold, so the policy answers everything; a few wrong
# audit labels must pull the threshold up above them.
SURE_SCORES, SURE_CORRECT = np.full(60, 0.99), np.ones(60, dtype=bool)


def test_draw_audit_honours_the_rate() -> None:
    rng = random.Random(7)
    assert not any(draw_audit(rng, 0.0) for _ in range(1000))
    assert all(draw_audit(rng, 1.0) for _ in range(1000))
    share = np.mean([draw_audit(rng, 0.2) for _ in range(4000)])
    assert 0.17 < share < 0.23


def test_identify_asks_store_the_audit_flag_score_and_prediction(audited: Lookloop, photos: list[bytes]) -> None:
    first = audited.ask("what is this?", photos[0])
    assert first.audit
    row = _row(audited, first.id)
    assert row.audit is True and row.score_kind == "margin"
    assert row.predicted_label == first.answer.result["label"]
    assert row.model_version == audited.model_version
    assert row.policy_score == pytest.approx(first.answer.result["margin"], abs=1e-4)
    audited.settings.audit_rate = 0.0
    for data in photos[:3]:
        record = audited.ask("what is this?", data)
        assert not record.audit
        assert _row(audited, record.id).audit is False  # drawn and not chosen (None: not an identify ask)


def test_an_auto_answered_audit_ask_is_reviewed_without_touching_the_wearers_answer(
    audited: Lookloop, photos: list[bytes]
) -> None:
    humans = audited.humans
    audited.policy = FixedThreshold(0.0)  # answers everything
    record = audited.ask("what is this?", photos[0])
    assert record.answer.decision == Decision.ANSWER
    item = humans.queue.for_ask(record.id)
    assert item is not None and item.reason == "audit" and not item.live and item.priority == AUDIT_PRIORITY

    audited.policy = _AlwaysAsk()  # an escalated audit ask is reviewed as an escalation anyway
    escalated = audited.ask("what is this?", photos[1])
    assert escalated.audit and escalated.answer.decision == Decision.ESCALATE
    live = humans.queue.for_ask(escalated.id)
    assert live is not None and live.reason == "escalated" and live.live

    info, _ = Accounts(audited.db).add_account("rev", "reviewer", "password-rev")
    rev = Principal("account", "reviewer", account_id=info.id, name="rev")
    assert humans.queue.next(rev) is not None  # the live escalation comes first
    humans.queue.submit(live.id, rev, "answer", escalated.answer.result["label"])
    assert humans.queue.next(rev).id == item.id  # type: ignore[union-attr]
    humans.queue.submit(item.id, rev, "answer", _wrong(record))
    after = audited.get_ask(record.id)
    assert after.outcome == Outcome.ANSWERED.value and after.final_answer is None
    assert after.answer.text == record.answer.text
    assert _row(audited, record.id).audit_correct is False
    assert _row(audited, escalated.id).audit_correct is True

    # "Cannot tell" counts as wrong: an answer nobody could verify must not improve the bound.
    audited.policy = FixedThreshold(0.0)
    unsure = audited.ask("what is this?", photos[2])
    unsure_item = humans.queue.for_ask(unsure.id)
    assert unsure_item is not None and unsure_item.reason == "audit"
    humans.queue.submit(unsure_item.id, rev, "reject")
    assert _row(audited, unsure.id).audit_correct is False
    assert audited.get_ask(unsure.id).outcome == Outcome.ANSWERED.value


def test_audit_labels_recalibrate_the_serving_policy(audited: Lookloop, photos: list[bytes]) -> None:
    _serve(audited, _register(audited, SURE_SCORES, SURE_CORRECT))
    policy = audited.policy
    assert isinstance(policy, ConformalPolicy) and policy.n_calibration == 60 and policy.threshold == 0.0
    records = [audited.ask("what is this?", data) for data in photos[:4]]
    assert all(r.audit and r.answer.model_version == audited.model_version for r in records)
    for r in records[:2]:
        audited.add_label(r.id, _wrong(r), source="human")
    for r in records[2:]:
        audited.add_label(r.id, str(r.answer.result["label"]), source="human")
    live = audited.policy
    assert isinstance(live, ConformalPolicy) and live is not policy
    assert live.n_calibration == 64
    # The same policy a fresh calibration on held-out + audit labels gives, threshold above the wrong ones.
    scores = [_row(audited, r.id).policy_score for r in records]
    expected = ConformalPolicy(audited.settings.alpha)
    expected.calibrate(np.concatenate([SURE_SCORES, scores]),
                       np.concatenate([SURE_CORRECT, [False, False, True, True]]))
    assert live.describe() == expected.describe()
    assert live.threshold > max(s or 0.0 for s in scores[:2])
    # A second, agreeing label of the same ask is not a second calibration point.
    audited.add_label(records[2].id, str(records[2].answer.result["label"]), source="operator")
    assert audited.policy is live
    figures = loop_figures(audited.serving)
    assert figures["audit"]["labels"] == 4 and figures["audit"]["labels_serving_version"] == 4
    assert figures["audit"]["rate"] == 1.0
    assert figures["policy"]["calibration_labels"] == 64
    assert figures["policy"]["threshold"] == live.threshold
    assert figures["policy"]["error_upper_bound"] == live.upper_bound


def test_labels_of_another_model_version_are_ignored_until_it_serves_again(
    audited: Lookloop, photos: list[bytes]
) -> None:
    v1 = _register(audited, SURE_SCORES, SURE_CORRECT)
    v2 = _register(audited, SURE_SCORES[:50], SURE_CORRECT[:50], swap={"Banana": "Cucumber"})
    _serve(audited, v1)
    records = [audited.ask("what is this?", data) for data in photos[:2]]
    _serve(audited, v2)
    before = audited.policy
    assert isinstance(before, ConformalPolicy) and before.n_calibration == 50
    for r in records:
        audited.add_label(r.id, _wrong(r), source="human")
    assert audited.policy is before and before.n_calibration == 50  # v1's scores say nothing about v2
    assert loop_figures(audited.serving)["audit"] == {"rate": 1.0, "asks": 2, "labels": 2, "labels_serving_version": 0,
                                              "min_labels": 4}
    _serve(audited, v1)  # back to v1: its held-out set and its audit labels
    back = audited.policy
    assert isinstance(back, ConformalPolicy) and back.n_calibration == 62


def test_a_new_system_over_the_same_database_rebuilds_the_same_calibration(
    audited: Lookloop, photos: list[bytes]
) -> None:
    _serve(audited, _register(audited, SURE_SCORES, SURE_CORRECT))
    for i, data in enumerate(photos[:4]):
        r = audited.ask("what is this?", data)
        audited.add_label(r.id, _wrong(r) if i % 2 else str(r.answer.result["label"]), source="human")
    live = audited.policy
    assert isinstance(live, ConformalPolicy) and live.n_calibration == 64

    again = Lookloop(audited.settings)
    again.migrate()
    again.identify_model  # noqa: B018 - start-up loads the serving version and rebuilds its policy
    rebuilt = again.policy
    assert isinstance(rebuilt, ConformalPolicy)
    assert rebuilt.describe() == live.describe()
    again.privacy.flush()
    again.db.dispose()


def test_the_fixed_threshold_gives_way_once_enough_audit_labels_exist(
    audited: Lookloop, photos: list[bytes]
) -> None:
    fixed = audited.policy
    assert isinstance(fixed, FixedThreshold)
    records = [audited.ask("what is this?", data) for data in photos[:4]]
    for r in records[:3]:
        audited.add_label(r.id, str(r.answer.result["label"]), source="human")
    assert audited.policy is fixed  # 3 < calibration_min_labels
    assert loop_figures(audited.serving)["policy"]["calibration_labels"] == 0
    audited.add_label(records[3].id, str(records[3].answer.result["label"]), source="human")
    live = audited.policy
    assert isinstance(live, ConformalPolicy) and live.n_calibration == 4 and live.score == "margin"
    assert loop_figures(audited.serving)["policy"]["calibration_labels"] == 4


def test_the_migration_keeps_older_asks_valid(database_url: str) -> None:
    from alembic import command

    from lookloop.store.db import Database, alembic_config

    db = Database(database_url)
    cfg = alembic_config(db.engine.url.render_as_string(hide_password=False))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0101_loop_registry")
        command.upgrade(cfg, "0002_humans")
        conn.execute(text("INSERT INTO asks (id, device_id, question, created_at, skill, answer_text, confidence, "
                          "decision, policy, model_version, result, candidates, outcome, latency_ms) VALUES "
                          "('old', 'dev', 'what?', CURRENT_TIMESTAMP, 'identify', 'Banana', 0.9, 'answer', '', "
                          "'v1', '{}', '[]', 'answered', 1.0)"))
    db.migrate()
    with db.session() as s:
        row = s.get(AskRow, "old")
        assert row is not None and row.audit is None and row.policy_score is None and row.audit_correct is None
    db.dispose()
