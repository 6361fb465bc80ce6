"""Background jobs: in-process on SQLite, a procrastinate queue and separate `lookloop worker` processes on Postgres.

The Postgres tests start real worker processes: a job an API request deferred is run by one; a job whose worker
is killed (SIGKILL) mid-way runs again on another and its effect happens once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import build_small_system, make_settings, reset_postgres
from privacy_util import product_photo
from sqlalchemy import text, update
from typer.testing import CliRunner

from lookloop.catalog import GroceryDataset
from lookloop.cli import app
from lookloop.errors import BadInput
from lookloop.jobs import InProcessJobs, JobContext, PostgresJobs
from lookloop.jobs.tables import JobRow
from lookloop.loop.policies import FixedThreshold
from lookloop.loop.training import TRAIN_JOB
from lookloop.privacy.storage import REDACT_JOB
from lookloop.store.db import Database

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    yield db
    db.dispose()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- SQLite: the same job functions, run in this process --------------------------------------------------------


def test_sqlite_runs_jobs_in_process_with_progress_and_result(sqlite_db: Database) -> None:
    jobs = InProcessJobs(sqlite_db, retry_wait_s=0)
    seen: list[int] = []

    def count(ctx: JobContext, n: int) -> dict[str, Any]:
        ctx.progress(0.5, "half way", force=True)
        seen.append(n)
        return {"n": n}

    jobs.register("count", count)
    job_id = jobs.defer("count", n=7)
    assert jobs.flush(timeout=30)
    info = jobs.get(job_id)
    assert (info.state, info.progress, info.attempts, info.result, info.detail) == ("succeeded", 1.0, 1, {"n": 7},
                                                                                    "half way")
    assert info.worker.endswith(":in-process") and str(os.getpid()) in info.worker
    assert seen == [7]
    assert [j.id for j in jobs.recent(state="succeeded")] == [job_id]


def test_a_failed_attempt_is_retried_and_bad_input_is_not(sqlite_db: Database) -> None:
    jobs = InProcessJobs(sqlite_db, max_attempts=3, retry_wait_s=0)
    calls: list[str] = []

    def flaky(ctx: JobContext) -> None:
        calls.append("flaky")
        if ctx.attempt == 1:
            raise RuntimeError("disk hiccup")

    def refused(ctx: JobContext) -> None:
        calls.append("refused")
        raise BadInput("nothing to train on")

    jobs.register("flaky", flaky)
    jobs.register("refused", refused)
    a, b = jobs.defer("flaky"), jobs.defer("refused")
    assert jobs.flush(timeout=30)
    assert (jobs.get(a).state, jobs.get(a).attempts, jobs.get(a).error) == ("succeeded", 2, "")
    assert (jobs.get(b).state, jobs.get(b).attempts, jobs.get(b).error) == ("failed", 1, "nothing to train on")
    assert calls.count("refused") == 1


def test_a_key_makes_one_piece_of_work_and_a_crashed_job_runs_at_the_next_start(sqlite_db: Database) -> None:
    release = False
    ran: list[str] = []

    def slow(ctx: JobContext, sha: str) -> None:
        _wait(lambda: release, 10, "release")
        ran.append(sha)

    jobs = InProcessJobs(sqlite_db)
    jobs.register("slow", slow)
    first = jobs.defer("slow", key="redact:abc", sha="abc")
    assert jobs.defer("slow", key="redact:abc", sha="abc") == first  # waiting or running: the same job
    release = True
    assert jobs.flush(timeout=30)
    assert ran == ["abc"]
    # A process that died mid-job left it "running": the next start runs it again.
    with sqlite_db.session() as s:
        s.execute(update(JobRow).where(JobRow.id == first).values(state="running", finished_at=None))
    again = InProcessJobs(sqlite_db)
    again.register("slow", slow)
    again.start()
    assert again.flush(timeout=30)
    assert ran == ["abc", "abc"] and again.get(first).state == "succeeded" and again.get(first).attempts == 2
    again.close()


_EXIT_MID_JOB = """
import sys, time
import cv2, numpy as np
from lookloop.jobs import InProcessJobs
from lookloop.store.db import Database

db = Database(sys.argv[1])
db.migrate()
jobs = InProcessJobs(db)
started = []

def blur(ctx):
    started.append(1)
    img = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    for _ in range(15):  # native code that lets go of the GIL, as redaction does
        img = cv2.GaussianBlur(img, (31, 31), 0)

jobs.register("blur", blur)
for i in range(3):
    jobs.defer("blur", key=f"blur:{sys.argv[2]}:{i}")
while not started:
    time.sleep(0.01)
print("exiting mid-job", flush=True)
"""


def test_a_process_that_exits_mid_job_stops_cleanly_and_keeps_the_rest_queued(tmp_path: Path) -> None:
    """A daemon job thread inside native code while the interpreter finalises used to abort the process."""
    url = f"sqlite:///{tmp_path / 'exit.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    for run in range(2):
        done = subprocess.run([sys.executable, "-c", _EXIT_MID_JOB, url, str(run)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "exiting mid-job" in done.stdout
    db = Database(url)
    try:
        jobs = InProcessJobs(db)
        states = sorted(j.state for j in jobs.recent())
        assert states and "running" not in states  # the job under way finished; the rest wait for the next start
        assert set(states) <= {"queued", "succeeded"}
    finally:
        db.dispose()


def test_unknown_jobs_and_states_are_refused(sqlite_db: Database) -> None:
    jobs = InProcessJobs(sqlite_db)
    with pytest.raises(BadInput, match="unknown job"):
        jobs.defer("nope")
    with pytest.raises(BadInput, match="unknown job state"):
        jobs.recent(state="exploded")


def test_the_sqlite_system_redacts_escalated_frames_in_a_job(tmp_path: Path, data_dir: Path, model_dir: Path,
                                                             grocery: GroceryDataset) -> None:
    system = build_small_system(make_settings(tmp_path, data_dir, model_dir), grocery, per_class=4)
    assert isinstance(system.jobs, InProcessJobs)
    system.policy = FixedThreshold(1.0)  # every identify ask goes to a person
    record = system.ask("what is this?", product_photo(grocery), skill="identify")
    assert record.outcome == "escalated"
    assert system.privacy.flush(timeout=120)
    [job] = system.jobs.recent(task=REDACT_JOB)
    assert job.state == "succeeded" and job.args == {"sha": record.frame_sha}
    info = system.privacy.info(record.frame_sha)
    assert info is not None and info.stage == "full"
    system.db.dispose()


# -- the command line -------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lookloop.config import get_settings

    monkeypatch.setenv("LOOKLOOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("LOOKLOOP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("args", "code", "message"), [
    (["serve", "--workers", "2", "--no-demo"], 2, "needs Postgres"),
    (["serve", "--workers", "0"], 2, "at least 1"),
    (["worker"], 2, "needs Postgres"),
    (["worker", "--concurrency", "0"], 2, "1..64"),
    (["worker", "--nice", "25"], 2, "0..19"),
    (["jobs", "list", "--state", "exploded"], 2, "unknown job state"),
    (["jobs", "show", "nosuchjob"], 2, "no job"),
    (["train", "--job"], 2, "needs Postgres"),
    (["export", "jsonl", "--out", "episodes.jsonl", "--job"], 2, "needs Postgres"),
    (["cluster", "status"], 1, "no cluster"),
    (["cluster", "down"], 1, "no cluster"),
    (["cluster", "up", "--workers", "0"], 2, "1..64"),
])
def test_cli_refuses_with_a_message(sqlite_env: None, args: list[str], code: int, message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux only")
def test_an_idle_worker_runs_every_thread_only_on_cpu_time_nothing_else_wants() -> None:
    """Threads started before (BLAS threads at import) and after (the job runners) all run at SCHED_IDLE."""
    script = """
import os, threading, time
from lookloop.cli.jobs import lower_priority
stop = threading.Event()
before = threading.Thread(target=stop.wait); before.start()
lower_priority(idle=True, nice=5)
seen = {}
def record():
    seen["after"] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
after = threading.Thread(target=record); after.start(); after.join()
stats = [open(f"/proc/self/task/{t}/stat").read() for t in os.listdir("/proc/self/task")]
policies = {int(st.rsplit(")", 1)[1].split()[38]) for st in stats}  # field 41: the scheduling policy
print(policies == {os.SCHED_IDLE}, seen["after"][0] == os.SCHED_IDLE, seen["after"][1] >= 5)
stop.set()
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "True", "True"], out.stdout


def test_jobs_list_on_sqlite(sqlite_env: None) -> None:
    result = CliRunner().invoke(app, ["jobs", "list"])
    assert result.exit_code == 0 and "no jobs yet" in result.output


# -- Postgres: a queue, and workers in other processes ----------------------------------------------------------


def _postgres() -> str:
    url = os.environ.get("LOOKLOOP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("LOOKLOOP_TEST_POSTGRES_URL is not set (CI sets it)")
    return url


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lookloop.cli", "worker", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _env(settings: Any, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "LOOKLOOP_DATABASE_URL": settings.database_url,
            "LOOKLOOP_VAR_DIR": str(settings.var_dir), "LOOKLOOP_MODEL_DIR": str(settings.model_dir),
            "LOOKLOOP_DATA_DIR": str(settings.data_dir), **extra}


@pytest.mark.postgres
def test_a_job_deferred_by_the_api_is_run_by_a_worker_process(tmp_path: Path, data_dir: Path, model_dir: Path,
                                                              grocery: GroceryDataset) -> None:
    from fastapi.testclient import TestClient

    from lookloop.server.app import create_app

    url = _postgres()
    reset_postgres(url)
    settings = make_settings(tmp_path, data_dir, model_dir, database_url=url)
    system = build_small_system(settings, grocery, per_class=4)
    assert isinstance(system.jobs, PostgresJobs)
    system.policy = FixedThreshold(1.0)  # every identify ask goes to a person: its frame is redacted now
    with TestClient(create_app(settings, system=system, warm=False)) as client:
        r = client.post("/v1/asks", data={"question": "what is this?", "skill": "identify"},
                        files={"image": ("p.jpg", product_photo(grocery), "image/jpeg")})
        assert r.status_code == 200, r.text
    sha = system.get_ask(r.json()["id"]).frame_sha
    [job] = system.jobs.recent(task=REDACT_JOB)
    assert job.state == "queued"  # the API process does not run it
    worker = _worker(_env(settings), "--burst", "--idle")  # runs what is queued, then stops
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out.decode(errors="replace")[-3000:]
    done = system.jobs.get(job.id)
    assert done.state == "succeeded" and done.attempts == 1, done
    assert done.worker.startswith(f"{os.uname().nodename}:{worker.pid}:")
    info = system.privacy.info(sha)
    assert info is not None and info.stage == "full"
    system.jobs.close()
    system.db.dispose()


def _procrastinate_jobs(db: Database) -> list[dict[str, Any]]:
    with db.session() as s:
        rows = s.execute(text("SELECT id, task_name, args, status FROM procrastinate_jobs ORDER BY id")).mappings()
        return [dict(r) for r in rows]


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    url = _postgres()
    reset_postgres(url)
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()


@pytest.mark.postgres
def test_a_process_dying_between_the_row_and_the_queue_leaves_neither(postgres_db: Database,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import procrastinate.jobs

    jobs = PostgresJobs(postgres_db)
    jobs.register("count", lambda ctx, n: {"n": n})
    job_id = jobs.defer("count", n=1)
    [queued] = _procrastinate_jobs(postgres_db)
    assert queued["args"] == {"job_id": job_id} and queued["status"] == "todo"
    with postgres_db.session() as s:
        assert s.get(JobRow, job_id).queue_id == queued["id"]  # type: ignore[union-attr]

    real_defer = procrastinate.jobs.JobDeferrer.defer

    def defer_then_die(self: Any, **kwargs: Any) -> int:
        real_defer(self, **kwargs)  # procrastinate's row is written ...
        raise SystemExit("the API process died here")  # ... and the process dies before the commit

    monkeypatch.setattr(procrastinate.jobs.JobDeferrer, "defer", defer_then_die)
    with pytest.raises(SystemExit):
        jobs.defer("count", n=2)
    # Neither a row stuck "queued" for a job nobody runs, nor a queued job without its row.
    assert [j.id for j in jobs.recent()] == [job_id]
    assert [q["args"] for q in _procrastinate_jobs(postgres_db)] == [{"job_id": job_id}]


@pytest.mark.postgres
def test_two_processes_deferring_one_key_at_once_make_one_job(postgres_db: Database,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import procrastinate.jobs

    first, second = PostgresJobs(postgres_db), PostgresJobs(postgres_db)  # two API processes' queues
    for q in (first, second):
        q.register("redact", lambda ctx, sha: None)
    inserted, commit = threading.Event(), threading.Event()
    real_defer = procrastinate.jobs.JobDeferrer.defer

    def slow_commit(self: Any, **kwargs: Any) -> int:
        queue_id: int = real_defer(self, **kwargs)
        if threading.current_thread().name == "first":
            inserted.set()  # written, not committed yet: the second process sees no job with the key
            assert commit.wait(30)
        return queue_id

    monkeypatch.setattr(procrastinate.jobs.JobDeferrer, "defer", slow_commit)
    ids: dict[str, str] = {}
    a = threading.Thread(target=lambda: ids.update(first=first.defer("redact", key="redact:x", sha="x")),
                         name="first")
    a.start()
    assert inserted.wait(30)
    b = threading.Thread(target=lambda: ids.update(second=second.defer("redact", key="redact:x", sha="x")),
                         name="second")
    b.start()  # its insert waits on the key's lock until the first commits, then finds the first's job
    time.sleep(0.5)
    commit.set()
    a.join(30)
    b.join(30)
    assert ids["first"] == ids["second"]
    assert [j.id for j in first.recent()] == [ids["first"]]
    assert len(_procrastinate_jobs(postgres_db)) == 1


def test_the_periodic_purge_removes_rows_of_jobs_finished_long_ago(tmp_path: Path, data_dir: Path,
                                                                     model_dir: Path, database_url: str) -> None:
    from lookloop.domain import utcnow
    from lookloop.jobs import JobContext
    from lookloop.privacy.retention import PURGE_JOB, PurgeJob
    from lookloop.system import Lookloop

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url))
    system.migrate()
    now = utcnow()
    ages = {"old-ok": ("succeeded", 20), "old-failed": ("failed", 15), "recent": ("succeeded", 13),
            "old-waiting": ("queued", None), "old-running": ("running", None)}
    with system.db.session() as s:
        for job_id, (state, days) in ages.items():
            s.add(JobRow(id=job_id, task=TRAIN_JOB, state=state, created_at=now - dt.timedelta(days=30),
                         finished_at=now - dt.timedelta(days=days) if days is not None else None))

    def left() -> set[str]:
        return {j.id for j in system.jobs.recent(limit=1000)}

    keep = {"recent", "old-waiting", "old-running"}
    if isinstance(system.jobs, InProcessJobs):  # SQLite: the job this process runs every purge interval
        job_id = system.jobs.defer(PURGE_JOB, key=PURGE_JOB)
        assert system.jobs.flush(timeout=60)
        done = system.jobs.get(job_id)
        assert done.state == "succeeded" and done.result["job_rows"] == 2, done
        assert left() == keep | {job_id}
    else:  # Postgres: what a worker runs, called here; procrastinate's old finished jobs go too
        with system.db.session() as s:
            s.execute(text("INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                           "VALUES ('default', 'privacy.redact', '{}', 'todo')"))
            s.execute(text("UPDATE procrastinate_jobs SET status = 'doing'"))
            s.execute(text("UPDATE procrastinate_jobs SET status = 'failed'"))
        with system.db.session() as s:
            s.execute(text("UPDATE procrastinate_events SET at = now() - interval '20 days'"))
        result = PurgeJob(system.privacy, system.db, jobs=system.jobs, keep_jobs_days=14)(
            JobContext("purge", 1, lambda fraction, detail: None))
        assert result["job_rows"] == 2 and left() == keep
        assert _procrastinate_jobs(system.db) == []
    # 0 keeps them for ever
    assert PurgeJob(system.privacy, system.db, jobs=system.jobs, keep_jobs_days=0)(
        JobContext("purge", 1, lambda fraction, detail: None)).get("job_rows") is None
    system.jobs.close()
    system.db.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_job_whose_worker_is_killed_runs_again_and_its_effect_happens_once(
    tmp_path: Path, data_dir: Path, model_dir: Path, grocery: GroceryDataset
) -> None:
    url = _postgres()
    reset_postgres(url)
    settings = make_settings(tmp_path, data_dir, model_dir, database_url=url)
    system = build_small_system(settings, grocery, per_class=8)
    job_id = system.jobs.defer(TRAIN_JOB, promote=True)
    env = _env(settings, LOOKLOOP_JOB_STALLED_AFTER_S="2", LOOKLOOP_JOB_RETRY_WAIT_S="0")
    first = _worker(env)
    try:
        _wait(lambda: system.jobs.get(job_id).state == "running", 180, "the first worker to start the job")
        os.killpg(first.pid, signal.SIGKILL)  # mid-way: no chance to finish or to record anything
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    lost = system.jobs.get(job_id)
    assert lost.state == "running" and lost.attempts == 1  # as the killed worker left it
    second = _worker(env)
    try:
        _wait(lambda: system.jobs.get(job_id).state in ("succeeded", "failed"), 300, "the job to finish")
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=60)
    done = system.jobs.get(job_id)
    assert done.state == "succeeded", (done.error, done)
    assert done.attempts == 2 and str(second.pid) in done.worker
    tagged = [v for v in system.registry.list(limit=100) if v.metrics.get("job") == job_id]
    assert len(tagged) == 1, [v.id for v in tagged]  # trained and registered once
    assert done.result["versions"] == [tagged[0].id]
    assert system.registry.current_id() == tagged[0].id  # and promoted
    system.jobs.close()
    system.db.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_cluster_up_detached_status_and_down(tmp_path: Path, data_dir: Path, model_dir: Path) -> None:
    from lookloop.cli.cluster import alive
    from lookloop.store.localpg import free_port, postgres_bin

    _postgres()  # CI, where PostgreSQL is installed
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LOOKLOOP_VAR_DIR": str(tmp_path / "var"),
           "LOOKLOOP_MODEL_DIR": str(model_dir), "LOOKLOOP_DATA_DIR": str(data_dir)}
    env.pop("LOOKLOOP_DATABASE_URL", None)
    cli = [sys.executable, "-m", "lookloop.cli", "cluster"]
    port = str(free_port())
    up = subprocess.run([*cli, "up", "--workers", "2", "--job-workers", "1", "--port", port, "--no-demo",
                         "--detach"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"http://127.0.0.1:{port}" in up.stdout and "job worker" in up.stdout
        status = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        import json

        state = json.loads(status.stdout)
        assert state["running"] and len(state["api_workers"]) == 2
        assert sorted(p["role"] for p in state["procs"]) == ["api", "job worker"]
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        pids = [p["pid"] for p in state["procs"]] + state["api_workers"]
    finally:
        down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(alive(pid) for pid in pids)
    after = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 1 and "no cluster" in after.stderr
