"""Liveness, readiness and /metrics: what they check, who may read the figures, and that workers add up."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from lookloop import telemetry
from lookloop.server.app import create_app
from lookloop.system import Lookloop
from tests.conftest import make_settings
from tests.humans_util import bearer, credentials, unknown_photo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(small_system: Lookloop) -> Iterator[TestClient]:
    with TestClient(create_app(system=small_system, warm=False)) as c:
        yield c


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page (the parser refuses a malformed one)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_live_and_ready_on_a_running_service(client: TestClient) -> None:
    assert client.get("/healthz/live").json() == {"status": "alive"}
    r = client.get("/healthz/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "model": "ok"}
    assert client.get("/healthz").json()["status"] == "ok"  # the older route still answers


def test_not_ready_when_the_database_is_unreachable(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    # Nothing listens on port 9: the connection is refused at once.
    settings = make_settings(tmp_path, data_dir, model_dir,
                             database_url="postgresql://postgres@127.0.0.1:9/lookloop")
    client = TestClient(create_app(settings, warm=False))  # no start-up: it would migrate
    r = client.get("/healthz/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["database"].startswith("unreachable")
    assert client.get("/healthz/live").status_code == 200  # the process itself is fine: no restart


def test_not_ready_before_the_schema_is_migrated(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    client = TestClient(create_app(make_settings(tmp_path, data_dir, model_dir), warm=False))
    r = client.get("/healthz/ready")
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["migrations"].startswith("not at head")


def test_metrics_need_an_operator_or_the_metrics_token(client: TestClient, small_system: Lookloop) -> None:
    device, reviewer, operator = credentials(client, small_system)
    assert client.get("/metrics").status_code == 401  # never anonymous
    assert client.get("/metrics", headers=bearer(device)).status_code == 403
    assert client.get("/metrics", headers=bearer(reviewer)).status_code == 403
    assert client.get("/metrics", headers=bearer("not-a-token")).status_code == 401
    r = client.get("/metrics", headers=bearer(operator))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    small_system.settings.metrics_token = "scrape-secret-0123456789"
    try:
        assert client.get("/metrics", headers=bearer("scrape-secret-0123456789")).status_code == 200
        assert client.get("/metrics", headers=bearer("scrape-secret-wrong")).status_code == 401
    finally:
        small_system.settings.metrics_token = ""


def test_metrics_count_asks_escalations_and_the_queue(client: TestClient, small_system: Lookloop,
                                                      grocery) -> None:  # type: ignore[no-untyped-def]
    device, _, operator = credentials(client, small_system)

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = client.get("/metrics", headers=bearer(operator))
        assert r.status_code == 200
        return samples(r.text)

    before = scrape()
    count = ("lookloop_ask_seconds_count", (("skill", "identify"),))
    escalations = ("lookloop_escalations_total", (("skill", "identify"),))
    photo = unknown_photo(small_system, grocery)
    r = client.post("/v1/asks", data={"question": "what is this?", "skill": "identify"},
                    files={"image": ("p.jpg", photo.path.read_bytes())}, headers=bearer(device))
    assert r.status_code == 200 and r.json()["answer"]["decision"] == "escalate"
    after = scrape()
    assert after[count] == before.get(count, 0.0) + 1
    assert after[escalations] == before.get(escalations, 0.0) + 1
    assert after[("lookloop_review_queue_depth", ())] == 1
    assert after[("lookloop_live_waits", ())] == 1
    assert any(name == "lookloop_worker_up" and value == 1 for (name, _), value in after.items())


def test_jobs_report_durations_and_failures() -> None:
    key = ("lookloop_job_failures_total", (("job", "test-job"),))
    before = samples(telemetry.render().decode()).get(key, 0.0)
    with telemetry.timed_job("test-job"):
        pass
    with pytest.raises(RuntimeError), telemetry.timed_job("test-job"):
        raise RuntimeError("boom")
    after = samples(telemetry.render().decode())
    assert after[key] == before + 1
    assert after[("lookloop_job_seconds_count", (("job", "test-job"),))] >= 2


_WORKER = """
import sys
from lookloop import telemetry
telemetry.register_worker(sys.argv[1])
telemetry.observe_ask("identify", 0.02, escalated=sys.argv[1] == "w2")
"""
_SCRAPE = """
import sys
from lookloop import telemetry
sys.stdout.write(telemetry.render(lambda: {"open": 3, "live": 1}).decode())
"""


def test_figures_of_several_workers_add_up(tmp_path: Path) -> None:
    """Multiprocess mode: each worker process writes its figures; a scrape in any process sees them all."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), telemetry.MULTIPROC_ENV: str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    for worker in ("w1", "w2"):
        subprocess.run([sys.executable, "-c", _WORKER, worker], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", _SCRAPE], env=env, check=True, timeout=60, capture_output=True,
                         text=True).stdout
    found = samples(out)
    assert found[("lookloop_ask_seconds_count", (("skill", "identify"),))] == 2
    assert found[("lookloop_escalations_total", (("skill", "identify"),))] == 1
    assert found[("lookloop_review_queue_depth", ())] == 3
    assert {dict(labels)["worker"] for (name, labels) in found if name == "lookloop_worker_up"} == {"w1", "w2"}


def test_prepare_multiprocess_starts_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.MULTIPROC_ENV, "")  # restored (unset) after the test, whatever sets it
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    telemetry.prepare_multiprocess(directory)
    assert os.environ[telemetry.MULTIPROC_ENV] == str(directory) and not any(directory.iterdir())


def test_jobs_run_by_the_queue_are_timed(tmp_path: Path) -> None:
    from lookloop.jobs import InProcessJobs
    from lookloop.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    jobs = InProcessJobs(db)
    jobs.register("test.ok", lambda ctx: {"fine": True})
    jobs.register("test.bad", lambda ctx: 1 / 0)
    count = ("lookloop_job_seconds_count", (("job", "test.ok"),))
    failed = ("lookloop_job_failures_total", (("job", "test.bad"),))
    before = samples(telemetry.render().decode())
    jobs.defer("test.ok", key="ok-1")
    jobs.defer("test.bad", key="bad-1")
    assert jobs.flush(timeout=60)
    after = samples(telemetry.render().decode())
    assert after[count] == before.get(count, 0.0) + 1
    assert after[failed] >= before.get(failed, 0.0) + 1
    db.dispose()
