"""Model registry: lineage, the evaluation gate, and promote/rollback changing what the server answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookloop.catalog import GroceryDataset
from lookloop.errors import Conflict
from lookloop.loop.learner import train_identify_head
from lookloop.loop.registry import GateRefused, ModelArtifacts, ModelVersion
from lookloop.models.embcache import embed_paths
from lookloop.system import Lookloop
from tests.conftest import small_val


def _artifacts(system: Lookloop, swap: dict[str, str]) -> tuple[ModelArtifacts, list[str], list[str]]:
    paths, labels, keys = system.labelled_images()
    labels = [swap.get(lab, lab) for lab in labels]
    x = embed_paths(system.embedding_cache, system.embedder, paths)
    head = train_identify_head(x, labels)
    return ModelArtifacts(head, system.embedder.version, x, labels, keys), keys, labels


def _good_and_bad(system: Lookloop) -> tuple[ModelVersion, ModelVersion]:
    """Two registered versions: a good one, and one with bananas and Granny Smith apples swapped in every label."""
    registry = system.registry
    good, keys, labels = _artifacts(system, {})
    v1 = registry.register(good, metrics={"accuracy": 0.9}, label_keys=keys, label_values=labels, parent_id=None,
                           kind="head")
    bad, bkeys, blabels = _artifacts(system, {"Banana": "Granny-Smith", "Granny-Smith": "Banana"})
    v2 = registry.register(bad, metrics={"accuracy": 0.4}, label_keys=bkeys, label_values=blabels,
                           parent_id=v1.id, kind="head")
    return v1, v2


def test_promote_and_rollback_change_the_serving_answer(small_system: Lookloop, grocery: GroceryDataset) -> None:
    photo = next(p for p in small_val(grocery, per_class=2) if p.label == "Banana")
    data = Path(photo.path).read_bytes()
    registry = small_system.registry
    v1, v2 = _good_and_bad(small_system)
    assert v2.parent_id == v1.id and v2.label_hash != v1.label_hash
    assert v2.label_count == len(registry.label_keys(v2.id))

    small_system.serving.registry_poll_s = 0.0  # check the registry on every ask
    registry.promote(v1.id)
    assert small_system.ask("what is this?", data).answer.result["label"] == "Banana"
    assert small_system.model_version == v1.id

    with pytest.raises(GateRefused):
        registry.promote(v2.id)  # worse than what serves: the gate says no
    assert registry.get(v2.id).status == "rejected"

    # Another process (a second registry on the same database) forces it through; the server follows.
    from lookloop.loop.registry import ModelRegistry

    ModelRegistry(small_system.db, registry.root).promote(v2.id, force=True)
    record = small_system.ask("what is this?", data)
    assert record.answer.result["label"] == "Granny-Smith"
    assert record.answer.model_version == v2.id

    back = registry.rollback()
    assert back.id == v1.id and back.serving
    assert small_system.ask("what is this?", data).answer.result["label"] == "Banana"
    with pytest.raises(Conflict):
        registry.rollback()  # only one version has served since
    listed = registry.list()
    assert [v.id for v in listed if v.serving] == [v1.id]


def test_loading_a_missing_version_is_a_clear_error(small_system: Lookloop) -> None:
    from lookloop.errors import NotFound

    with pytest.raises(NotFound):
        small_system.registry.promote("v9999-nope")


def test_a_restarted_service_loads_the_promoted_version(small_system: Lookloop) -> None:
    good, keys, labels = _artifacts(small_system, {})
    v1 = small_system.registry.register(good, metrics={"accuracy": 0.9}, label_keys=keys, label_values=labels,
                                        parent_id=None, kind="head")
    small_system.registry.promote(v1.id)
    fresh = Lookloop(small_system.settings)
    fresh.migrate()
    assert fresh.identify_model is not None
    assert fresh.model_version == v1.id
    assert np.isclose(fresh.identify_model.memory.matrix.shape[0], len(keys))
    fresh.db.dispose()


def test_loop_figures_for_the_dashboard(small_system: Lookloop, grocery: GroceryDataset) -> None:
    from lookloop.loop.figures import loop_figures

    good, keys, labels = _artifacts(small_system, {})
    v1 = small_system.registry.register(good, metrics={"accuracy": 0.9, "coverage": 0.5}, label_keys=keys,
                                        label_values=labels, parent_id=None, kind="head")
    small_system.registry.promote(v1.id)
    photo = small_val(grocery, per_class=1)[0]
    small_system.ask("what is this?", Path(photo.path).read_bytes())
    figures = loop_figures(small_system.serving)
    assert figures["serving"] == v1.id
    assert figures["versions"][0]["accuracy"] == 0.9
    assert figures["live"]["asks"] == 1
    assert figures["by_day"][0]["asks"] == 1


def test_models_cli(tmp_path: Path, data_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from lookloop.cli import app
    from lookloop.config import get_settings

    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("LOOKLOOP_DATA_DIR", str(tmp_path / "no-data"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        listed = runner.invoke(app, ["models", "list"])
        assert listed.exit_code == 0 and "no model versions yet" in listed.output
        for args in (["models", "rollback"], ["models", "promote", "v0001-x"], ["train"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, (args, result.output)
            assert "Traceback" not in result.output
    finally:
        get_settings.cache_clear()


def test_operators_promote_and_roll_back_over_http(small_system: Lookloop, grocery: GroceryDataset) -> None:
    from fastapi.testclient import TestClient

    from lookloop.server.app import create_app

    photo = next(p for p in small_val(grocery, per_class=2) if p.label == "Banana")
    data = Path(photo.path).read_bytes()
    v1, v2 = _good_and_bad(small_system)
    small_system.humans.accounts.add_account("olga", "operator", "pw-12345678")
    with TestClient(create_app(system=small_system, warm=False)) as c:
        token = c.post("/v1/auth/login", json={"username": "olga", "password": "pw-12345678"}).json()["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        before = small_system.model_version
        assert c.get("/v1/operators/models").json()["rollback_to"] is None  # nothing has served before
        promoted = c.post(f"/v1/operators/models/{v1.id}/promote")
        assert promoted.status_code == 200
        assert small_system.model_version == v1.id  # served at once, no restart
        # It says what it did, and what a rollback would return to: the start-up model, kept.
        assert promoted.json()["done"].startswith(f"Promoted {v1.id}: it serves now instead of {before}")
        assert "startup" in promoted.json()["rollback_to"]
        assert c.post(f"/v1/operators/models/{v2.id}/promote").status_code == 409  # the gate refuses
        assert small_system.ask("what is this?", data).answer.result["label"] == "Banana"
        listing = c.get("/v1/operators/models").json()
        assert {v["version"] for v in listing["versions"]} >= {v1.id, v2.id} and listing["actions"]
        figures = c.get("/v1/operators/loop").json()
        assert figures["serving"] == v1.id and len(figures["versions"]) >= 2
        # The model that served before the first promotion was kept: "roll back" returns to it.
        back = c.post("/v1/operators/models/rollback")
        assert back.status_code == 200, back.text
        startup = back.json()["serving"]
        assert "startup" in startup and small_system.model_version == startup
        assert back.json()["done"] == f"Rolled back: {startup} serves again instead of {v1.id}"
        assert back.json()["rollback_to"] is None
        assert small_system.ask("what is this?", data).answer.result["label"] == "Banana"
        listing = c.get("/v1/operators/models").json()
        assert {v["version"] for v in listing["versions"]} >= {v1.id, v2.id, startup}
        assert c.post("/v1/operators/models/rollback").status_code == 409  # nothing served before it


def test_a_version_records_its_backbone_variant(small_system: Lookloop) -> None:
    """A tuned backbone serves at its variant's size and under its variant's name, whatever is configured now."""
    import json

    from lookloop.loop.registry import serving_embedder
    from lookloop.models.embedder import finetuned_embedder, variant_image_size

    art, keys, labels = _artifacts(small_system, {})
    art.backbone_onnx = next(small_system.settings.model_cache_dir.glob("efficientnet-lite0-*.onnx"))
    version = small_system.registry.register(art, metrics={"accuracy": 0.9}, label_keys=keys, label_values=labels,
                                             parent_id=None, kind="finetune")
    lineage = json.loads((version.artifact_dir / "lineage.json").read_text(encoding="utf-8"))
    assert lineage["variant"] == "lite0" and lineage["image_size"] == variant_image_size("lite0")
    loaded = small_system.registry.load(version.id)
    emb = serving_embedder(loaded, small_system.settings.model_cache_dir, "lite2")
    assert emb.version.startswith("lite0-ft-") and emb.image_size == variant_image_size("lite0")
    assert emb.version == finetuned_embedder(version.artifact_dir / "backbone.onnx", "lite0").version
