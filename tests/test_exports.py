"""Exports: each format is written, read back and checked against the episodes it came from."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_CLASSES, make_settings, run_queued_jobs, small_val
from episode_fixtures import add_episode
from PIL import Image
from typer.testing import CliRunner

from lookloop.catalog import grocery_catalog
from lookloop.config import get_settings
from lookloop.domain import utcnow
from lookloop.exports import exportable_ask_ids, load_episodes
from lookloop.exports.episodes import pseudonym
from lookloop.exports.hf import export_hf
from lookloop.exports.imagefolder import class_dir, export_imagefolder
from lookloop.exports.jsonl import export_jsonl
from lookloop.exports.kto import export_kto
from lookloop.skills.identify import product_line
from lookloop.system import Lookloop

NOW = utcnow()


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path, database_url: str, grocery: Any) -> Iterator[Lookloop]:
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url))  # SQLite and Postgres
    s.migrate()
    s.upsert_items([i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES])
    yield s
    s.db.dispose()


@pytest.fixture
def episodes(system: Lookloop, grocery: Any) -> dict[str, dict[str, Any]]:
    """Five kinds of episode, one of them from a wearer who said no to training use."""
    val: dict[str, Any] = {}
    for img in small_val(grocery):
        val.setdefault(img.label, img)
    banana, apple, milk, pepper = val["Banana"], val["Granny-Smith"], val["Arla-Standard-Milk"], val["Red-Bell-Pepper"]
    t0 = NOW - dt.timedelta(hours=5)
    eps = {
        # the AI was right and the wearer said so
        "right": add_episode(system, image=banana, truth="Banana", guess="Banana", decision="answer",
                             created_at=t0, label_source="wearer", label_after_s=3, author="dev-a",
                             feedback=("right", None, False)),
        # unsure and wrong: a reviewer gave the answer
        "human": add_episode(system, image=apple, truth="Granny-Smith", guess="Cucumber", decision="escalate",
                             created_at=t0 + dt.timedelta(minutes=10), label_source="human", label_after_s=12,
                             author="ana", model_version="lite0+head-old"),
        # answered wrongly; the wearer re-asked at once (implicit "wrong"), nobody labelled it
        "implicit": add_episode(system, image=milk, truth="Arla-Standard-Milk", guess="Oatly-Oat-Milk",
                                decision="answer", created_at=t0 + dt.timedelta(minutes=20),
                                feedback=("wrong", None, True)),
        # nobody said anything
        "silent": add_episode(system, image=pepper, truth="Red-Bell-Pepper", guess="Red-Bell-Pepper",
                              decision="answer", created_at=t0 + dt.timedelta(minutes=30)),
        # an old one, outside a --since 1d window
        "old": add_episode(system, image=None, truth="Banana", guess="Banana", decision="answer",
                           created_at=NOW - dt.timedelta(days=3), label_source="human", author="bo"),
    }
    from lookloop.humans.tables import DeviceRow, WearerRow
    from lookloop.privacy.consent import ConsentService

    with system.db.session() as s:
        s.add(WearerRow(id="w-private", name="private wearer"))
        s.flush()
        s.add(DeviceRow(id="dev-private", wearer_id="w-private", name="glasses", token_hash="0" * 64))
    ConsentService(system.db).set("w-private", training_use=False)
    eps["private"] = add_episode(system, image=banana, truth="Banana", guess="Cucumber", decision="escalate",
                                 created_at=t0 + dt.timedelta(minutes=40), device_id="dev-private",
                                 label_source="human", author="ana")
    return eps


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_consent_gate_leaves_out_wearers_who_said_no(system: Lookloop, episodes: dict[str, Any]) -> None:
    with system.db.session() as s:
        ids = exportable_ask_ids(s)
    assert episodes["private"]["id"] not in ids
    assert {episodes[k]["id"] for k in ("right", "human", "implicit", "silent", "old")} <= ids
    assert episodes["private"]["id"] not in {e.ask_id for e in load_episodes(system)}


def test_jsonl_has_episodes_labels_and_lineage(system: Lookloop, episodes: dict[str, Any], tmp_path: Path,
                                               grocery: Any) -> None:
    from lookloop.loop.tables import ModelVersionRow

    with system.db.session() as s:  # a registered version trained on the reviewer's label
        s.add(ModelVersionRow(id="v-0002", artifact_dir=str(tmp_path / "none"),
                              label_keys=[f"ask:{episodes['human']['id']}", "catalog:x:y.jpg"]))
    out = tmp_path / "out" / "episodes.jsonl"
    result = export_jsonl(system, out, frames=True)
    rows = {r["ask_id"]: r for r in _read_jsonl(out)}
    expected = {episodes[k]["id"] for k in ("right", "human", "implicit", "silent", "old")}
    assert set(rows) == expected and result.records == len(expected)

    human = rows[episodes["human"]["id"]]
    assert human["answer"]["label"] == "Cucumber" and human["answer"]["decision"] == "escalate"
    assert human["label"] == "Granny-Smith" and human["ai_correct"] is False
    assert human["lineage"] == {"answered_by_model": "lite0+head-old", "label_source": "human",
                                "label_author": "ana", "label_trust": None, "label_status": "applied",
                                "trained_in": ["v-0002"]}
    assert rows[episodes["right"]["id"]]["lineage"]["trained_in"] == []
    assert human["outcome"] == "human_answered"
    # The frame written beside the file is the very photo that was asked about.
    frame_file = out.parent / human["frame_file"]
    assert hashlib.sha256(frame_file.read_bytes()).hexdigest() == episodes["human"]["frame_sha"]

    right = rows[episodes["right"]["id"]]
    assert right["ai_correct"] is True and right["feedback"][0]["verdict"] == "right"
    # The wearer's device id never leaves the system: only a pseudonym does.
    assert right["wearer"] == pseudonym("dev-a") and "dev-a" not in json.dumps(right)
    assert right["labels"][0]["author"] == pseudonym("dev-a")
    implicit = rows[episodes["implicit"]["id"]]
    assert implicit["label"] is None and implicit["feedback"][0]["implicit"] is True
    assert rows[episodes["old"]["id"]]["frame_file"] is None


def test_jsonl_window_labelled_only_and_refusing_to_overwrite(system: Lookloop, episodes: dict[str, Any],
                                                              tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    export_jsonl(system, out, since=NOW - dt.timedelta(days=1), labelled_only=True)
    ids = {r["ask_id"] for r in _read_jsonl(out)}
    assert ids == {episodes["right"]["id"], episodes["human"]["id"]}
    from lookloop.errors import BadInput

    with pytest.raises(BadInput, match="already exists"):
        export_jsonl(system, out)
    export_jsonl(system, out, force=True)
    assert len(_read_jsonl(out)) == 5


def test_hf_dataset_reads_back_with_images(system: Lookloop, episodes: dict[str, Any], tmp_path: Path,
                                           grocery: Any) -> None:
    from datasets import load_from_disk

    out = tmp_path / "hf"
    result = export_hf(system, out)
    ds = load_from_disk(str(out))
    assert len(ds) == result.records == 5
    assert ds.features["image"].__class__.__name__ == "Image"
    by_id = {r["ask_id"]: r for r in ds}
    human = by_id[episodes["human"]["id"]]
    assert human["image"].size == Image.open(io.BytesIO(system.frame_bytes(episodes["human"]["frame_sha"]))).size
    assert human["label"] == "Granny-Smith" and human["label_source"] == "human" and human["ai_correct"] is False
    assert human["candidates"][0]["label"] == "Cucumber"
    assert by_id[episodes["old"]["id"]]["image"] is None
    assert by_id[episodes["silent"]["id"]]["label"] is None
    assert result.details["images"] == 4


def test_kto_records_from_feedback_and_corrections(system: Lookloop, episodes: dict[str, Any],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "kto.jsonl"
    export_kto(system, out, frames=True)
    rows = _read_jsonl(out)
    assert all(set(r) >= {"prompt", "completion", "label"} and isinstance(r["label"], bool) for r in rows)
    by_ask: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_ask.setdefault(r["ask_id"], []).append(r)

    def phrase(label: str) -> str:
        return product_line(system.find_item(label), label)

    # wrong AI answer + the reviewer's correction: one undesirable, one desirable completion
    human = by_ask[episodes["human"]["id"]]
    assert {(r["completion"], r["label"]) for r in human} == {(phrase("Cucumber"), False),
                                                               (phrase("Granny-Smith"), True)}
    assert all(r["prompt"] == "what is this?" and r["image"] for r in human)
    # the wearer said "right"
    assert [(r["completion"], r["label"]) for r in by_ask[episodes["right"]["id"]]] == [(phrase("Banana"), True)]
    # a quick re-ask counts as "wrong"
    implicit = by_ask[episodes["implicit"]["id"]]
    assert [(r["completion"], r["label"], r["signal"]) for r in implicit] == [
        (phrase("Oatly-Oat-Milk"), False, "implicit")]
    # no judgement, no record; no consent, no record
    assert episodes["silent"]["id"] not in by_ask and episodes["private"]["id"] not in by_ask
    # completions are phrased alike whichever way they are judged (price line for products)
    assert all("SEK" in r["completion"] for r in rows if r["completion"] != "Banana")


def test_imagefolder_tree(system: Lookloop, episodes: dict[str, Any], tmp_path: Path, grocery: Any) -> None:
    out = tmp_path / "tree"
    result = export_imagefolder(system, out)
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert classes == sorted({"Banana", "Granny-Smith"})  # the two labelled asks with frames and consent
    with (out / "metadata.csv").open() as fh:
        meta = list(csv.DictReader(fh))
    assert len(meta) == result.records == 2
    for row in meta:
        path = out / row["file_name"]
        assert path.parent.name == class_dir(row["label"])
        Image.open(io.BytesIO(path.read_bytes())).verify()
    # imports add the imported labelled photos, under the same class names
    from conftest import small_labels

    system.import_labelled_images(small_labels(grocery, 2), source="import")
    result = export_imagefolder(system, out, imports=True, force=True)
    assert result.details["imported"] == 2 * len(SMALL_CLASSES)
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(SMALL_CLASSES)


def test_class_dir_is_safe() -> None:
    for evil in ("../../etc/passwd", "..", "a/b\\c", ".hidden"):
        name = class_dir(evil)
        assert "/" not in name and "\\" not in name and not name.startswith(".") and name
    assert class_dir("Oatly Oat-Milk") == "Oatly Oat-Milk"
    assert class_dir("  ") == "unlabelled"


@pytest.fixture
def cli_env(tmp_path: Path, data_dir: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOOKLOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOOKLOOP_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_cli_exports_and_clear_errors(cli_env: Path, grocery: Any) -> None:
    from lookloop.cli import app

    system = Lookloop(get_settings())
    system.migrate()
    photo = small_val(grocery)[0]
    add_episode(system, image=photo, truth=photo.label, guess="Cucumber", decision="escalate",
                created_at=NOW - dt.timedelta(hours=1), label_source="human", author="ana")
    system.db.dispose()
    runner = CliRunner()
    out = cli_env / "x.jsonl"
    r = runner.invoke(app, ["export", "jsonl", "--out", str(out), "--since", "7d"])
    assert r.exit_code == 0, r.output
    assert "exported 1 episodes" in r.output and len(_read_jsonl(out)) == 1
    r = runner.invoke(app, ["export", "jsonl", "--out", str(out)])
    assert r.exit_code != 0 and "already exists" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "kto", "--out", str(cli_env / "k.jsonl"), "--since", "yesterday-ish"])
    assert r.exit_code != 0 and "cannot read the time" in r.output
    r = runner.invoke(app, ["export", "imagefolder", "--out", str(cli_env / "tree")])
    assert r.exit_code == 0, r.output
    assert (cli_env / "tree" / class_dir(photo.label)).is_dir()
    r = runner.invoke(app, ["export", "hf", "--out", str(cli_env / "hf")])
    assert r.exit_code == 0, r.output


def test_kto_corrections_answer_the_question_asked(system: Lookloop, grocery: Any, tmp_path: Path) -> None:
    """A corrected price ask's desirable completion is the corrected product's price line from the catalogue,
    never its bare name; read gets the corrected text; a correction of another skill gives no desirable one."""
    from lookloop.skills.price import price_text

    photo = small_val(grocery)[0]
    at = NOW - dt.timedelta(hours=1)

    def corrected(skill: str, question: str, said: str, correction: str, result: dict[str, Any] | None = None,
                  minutes: int = 0) -> str:
        return str(add_episode(system, image=photo, truth=correction, guess=said, decision="answer",
                               created_at=at + dt.timedelta(minutes=minutes), label_source="wearer",
                               label_value=correction, author="dev-a", feedback=("wrong", correction, False),
                               skill=skill, question=question, answer_text=said, result=result)["id"])

    cucumber, banana = system.find_item("Cucumber"), system.find_item("Banana")
    assert cucumber is not None and banana is not None
    ids = {
        "price": corrected("price", "how much is it?", price_text(cucumber), "banana",
                           {"label": "Cucumber", "price": cucumber.price}),
        "price-unknown": corrected("price", "how much is it?", price_text(cucumber), "my grandmother's jam",
                                   {"label": "Cucumber", "price": cucumber.price}, 1),
        "read": corrected("read", "read this", "ROWBSPACE42", "ROW B SPACE 42", {"lines": []}, 2),
        "colour": corrected("colour", "what colour is it?", "Yellow", "it is green really", {"colour": "yellow"}, 3),
        "notes": corrected("notes", "take notes", "Taking notes.", "no, stop", {}, 4),
    }
    out = tmp_path / "kto.jsonl"
    export_kto(system, out)
    by_ask: dict[str, list[tuple[str, bool]]] = {}
    for r in _read_jsonl(out):
        by_ask.setdefault(r["ask_id"], []).append((r["completion"], r["label"]))
    assert sorted(by_ask[ids["price"]]) == sorted([(price_text(cucumber), False), (price_text(banana), True)])
    assert price_text(banana).startswith("Banana — ") and "SEK" in price_text(banana)
    assert by_ask[ids["price-unknown"]] == [(price_text(cucumber), False)]  # no price known: nothing desirable
    assert sorted(by_ask[ids["read"]]) == [("ROW B SPACE 42", True), ("ROWBSPACE42", False)]
    assert by_ask[ids["colour"]] == [("Yellow", False)]
    assert by_ask[ids["notes"]] == [("Taking notes.", False)]


# -- exports as background jobs ---------------------------------------------------------------------------------


def _operator(client: Any, system: Lookloop) -> dict[str, str]:
    system.humans.accounts.add_account("op", "operator", "pw-12345678")
    token = client.post("/v1/auth/login", json={"username": "op", "password": "pw-12345678"}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def test_an_export_asked_over_http_or_with_job_runs_as_a_job(system: Lookloop, episodes: dict[str, Any],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from lookloop.exports.service import EXPORT_JOB
    from lookloop.jobs import PostgresJobs
    from lookloop.server.app import create_app

    with TestClient(create_app(system.settings, system=system, warm=False)) as client:
        headers = _operator(client, system)
        assert client.post("/v1/operators/exports", json={"format": "jsonl"}).status_code == 401
        r = client.post("/v1/operators/exports", json={"format": "jsonl", "name": "week.jsonl", "since": "1d"},
                        headers=headers)
        assert r.status_code == 202, r.text
        job_id, path = r.json()["job_id"], Path(r.json()["path"])
        assert path == system.settings.exports_dir / "week.jsonl" and r.json()["job"]["task"] == EXPORT_JOB
        # Refused at once, with a message: a path outside the exports folder, a bad time, an unknown format.
        for body, status, message in [({"format": "jsonl", "name": "../escape.jsonl"}, 422, "plain file name"),
                                      ({"format": "kto", "since": "yesterday-ish"}, 422, "cannot read the time"),
                                      ({"format": "csv"}, 422, "")]:
            r = client.post("/v1/operators/exports", json=body, headers=headers)
            assert r.status_code == status and message in r.text, r.text
        cli_job = None
        if isinstance(system.jobs, PostgresJobs):  # `lookloop export … --job` queues it for a worker
            from lookloop.cli import app

            for var, value in [("LOOKLOOP_DATABASE_URL", system.settings.database_url),
                               ("LOOKLOOP_VAR_DIR", str(system.settings.var_dir)),
                               ("LOOKLOOP_DATA_DIR", str(system.settings.data_dir)),
                               ("LOOKLOOP_MODEL_DIR", str(system.settings.model_dir))]:
                monkeypatch.setenv(var, value)
            get_settings.cache_clear()
            try:
                r = CliRunner().invoke(app, ["export", "imagefolder", "--out", str(tmp_path / "tree"), "--job"])
            finally:
                get_settings.cache_clear()
            assert r.exit_code == 0 and "queued export job" in r.output, r.output
            [cli_job] = [j.id for j in system.jobs.recent(task=EXPORT_JOB) if j.args["format"] == "imagefolder"]
        run_queued_jobs(system)
        r = client.get(f"/v1/operators/jobs/{job_id}", headers=headers)
    done = r.json()
    assert done["state"] == "succeeded" and done["progress"] == 1.0 and done["attempts"] == 1, done
    assert done["result"] == {"path": str(path), "records": 4, "labelled": 2, "frames": 0}
    assert len(_read_jsonl(path)) == 4 and not list(path.parent.glob(".*"))  # whole, and nothing left beside it
    if cli_job is not None:
        assert system.jobs.get(cli_job).state == "succeeded"
        assert (tmp_path / "tree" / "metadata.csv").is_file()


def test_a_retried_export_replaces_what_an_interrupted_attempt_left(system: Lookloop, episodes: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    from sqlalchemy import update

    from lookloop.exports.service import EXPORT_JOB
    from lookloop.jobs import InProcessJobs
    from lookloop.jobs.tables import JobRow

    out, tree = tmp_path / "all.jsonl", tmp_path / "tree"
    # What a worker killed during its first attempts left: one export renamed into place but never recorded as
    # done, a torn temporary file, and a half-built folder.
    out.write_text('{"ask_id": "from the first attempt"}\n')
    (tmp_path / f".{out.name}.tmp").write_text('{"ask_id": "torn')
    (tmp_path / ".tree.partial" / "export" / "Banana").mkdir(parents=True)
    (tmp_path / ".tree.partial" / "export" / "Banana" / "half.jpg").write_bytes(b"\xff\xd8")
    args = [dict(format="jsonl", out=str(out), since=None, until=None, labelled_only=False, frames=False,
                 skill="identify", imports=False, force=False),
            dict(format="imagefolder", out=str(tree), since=None, until=None, labelled_only=False, frames=False,
                 skill="identify", imports=False, force=False)]
    if isinstance(system.jobs, InProcessJobs):  # the rows as the killed process left them; the restart runs them
        with system.db.session() as s:
            for a in args:
                s.add(JobRow(task=EXPORT_JOB, args=a, key=f"export:{a['out']}", state="running", attempts=1))
        system.jobs.start()
    else:  # queued (the paths were free then), then taken by a worker that died
        out.unlink()
        system.exports.queue("jsonl", out)
        system.exports.queue("imagefolder", tree)
        out.write_text('{"ask_id": "from the first attempt"}\n')
        with system.db.session() as s:
            s.execute(update(JobRow).values(state="running", attempts=1))
    run_queued_jobs(system)
    jobs = system.jobs.recent(task=EXPORT_JOB)
    assert [(j.state, j.attempts) for j in jobs] == [("succeeded", 2)] * 2, jobs
    rows = _read_jsonl(out)
    assert len(rows) == len({r["ask_id"] for r in rows}) == 5  # every episode once: not doubled, not torn
    assert {p.name for p in tree.iterdir()} == {"Banana", "Granny-Smith", "metadata.csv"}
    assert not (tree / "Banana" / "half.jpg").exists()
    assert sorted(p.name for p in tmp_path.glob(".*")) == []  # no temporary file or folder left


def test_an_export_that_fails_mid_way_leaves_the_previous_one_whole(system: Lookloop, episodes: dict[str, Any],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "tree"
    first = export_imagefolder(system, tree)
    before = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))

    def unreadable(sha: str) -> bytes:
        raise OSError("the shared volume went away")

    monkeypatch.setattr(system.privacy, "redacted_bytes", unreadable)
    with pytest.raises(OSError, match="went away"):
        export_imagefolder(system, tree, force=True)
    with pytest.raises(OSError, match="went away"):
        export_hf(system, tmp_path / "hf")
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == before and first.records == 2
    assert not (tmp_path / "hf").exists() and sorted(p.name for p in tmp_path.glob(".*")) == []
