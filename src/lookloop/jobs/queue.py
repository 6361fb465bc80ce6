"""Job queues: the same job functions, run by procrastinate workers (Postgres) or by a thread of this process (SQLite).

A job function is ``fn(ctx, **args) -> dict | None``: a service's method registered under a name in
``lookloop.system.build_system``. It must be idempotent: a job whose worker died mid-way runs again, and the
second run must not repeat what the first one finished (each job function says how it checks). Progress and the
outcome go to the ``jobs`` table either way.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from lookloop import telemetry
from lookloop.domain import as_utc, utcnow
from lookloop.errors import BadInput, LookloopError, NotFound
from lookloop.jobs.tables import JobRow
from lookloop.store.db import Database

log = logging.getLogger("lookloop.jobs")

JobFn = Callable[..., dict[str, Any] | None]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed or its worker died; it runs again
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.RETRYING.value)
FINISHED = (JobState.SUCCEEDED.value, JobState.FAILED.value)


@dataclass(frozen=True)
class JobInfo:
    """What operators see of a job."""

    id: str
    task: str
    args: dict[str, Any]
    key: str | None
    state: str
    progress: float
    detail: str
    attempts: int
    max_attempts: int
    error: str
    result: dict[str, Any]
    worker: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, row: JobRow) -> JobInfo:
        return cls(
            id=row.id, task=row.task, args=dict(row.args or {}), key=row.key, state=row.state,
            progress=float(row.progress), detail=row.detail, attempts=row.attempts, max_attempts=row.max_attempts,
            error=row.error, result=dict(row.result or {}), worker=row.worker, created_at=as_utc(row.created_at),
            started_at=as_utc(row.started_at) if row.started_at else None,
            finished_at=as_utc(row.finished_at) if row.finished_at else None,
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("created_at", "started_at", "finished_at"):
            out[k] = out[k].isoformat() if out[k] else None
        return out


class JobContext:
    """Handed to a job function: its id, which attempt this is, and a way to report progress."""

    def __init__(self, job_id: str, attempt: int, report: Callable[[float, str], None]) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._report = report
        self._last = 0.0

    def progress(self, fraction: float, detail: str = "", *, force: bool = False) -> None:
        """Records how far the job is (0..1); written at most twice a second."""
        now = time.monotonic()
        if force or now - self._last >= 0.5:
            self._last = now
            self._report(min(1.0, max(0.0, float(fraction))), detail[:200])

    def reporter(self) -> Callable[[str, int, int], None]:
        """A ``progress(what, done, total)`` callback (the embedders' and trainers' form) writing to this job."""

        def report(what: str, done: int, total: int) -> None:
            self.progress(done / total if total else 0.0, what)

        return report


@dataclass(frozen=True)
class _Task:
    fn: JobFn
    max_attempts: int
    every_s: float  # > 0: deferred this often by the runner (one at a time, keyed by its name)


class _Outcome(StrEnum):
    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"


def _json_safe(value: Any) -> dict[str, Any]:
    if not value:
        return {}
    safe: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return safe


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:120]


class JobQueue:
    """What both queues share: registering job functions, the ``jobs`` table, and running one attempt."""

    kind = "none"

    def __init__(self, db: Database, *, max_attempts: int = 3, retry_wait_s: float = 5.0) -> None:
        self.db = db
        self.max_attempts = max(1, max_attempts)
        self.retry_wait_s = max(0.0, retry_wait_s)
        self._tasks: dict[str, _Task] = {}

    # -- registering and deferring ------------------------------------------------------------------------

    def register(self, name: str, fn: JobFn, *, max_attempts: int | None = None, every_s: float = 0.0) -> None:
        """Makes ``fn`` runnable as job ``name``; ``every_s`` > 0 runs it periodically where jobs run."""
        if name in self._tasks:
            raise ValueError(f"job {name!r} is registered already")
        self._tasks[name] = _Task(fn, max(1, max_attempts or self.max_attempts), max(0.0, every_s))

    def tasks(self) -> list[str]:
        return sorted(self._tasks)

    def defer(self, name: str, *, key: str | None = None, **args: Any) -> str:
        """Queues a job and returns its id. With ``key``, a job with that key still waiting or running is
        the same piece of work: its id comes back and nothing new is queued."""
        if name not in self._tasks:
            raise BadInput(f"unknown job {name!r}; known: {', '.join(self.tasks())}")
        existing = self._active(key) if key is not None else None
        if existing is not None:
            return existing
        return self._submit(name, key, _json_safe(args))

    def _row(self, name: str, key: str | None, args: dict[str, Any]) -> JobRow:
        return JobRow(task=name, args=args, key=key, state=JobState.QUEUED.value,
                      max_attempts=self._tasks[name].max_attempts)

    def _submit(self, name: str, key: str | None, args: dict[str, Any]) -> str:
        """Writes the job's row and hands the job to whatever runs it; returns the id of the job that will do
        the work (another one's, when that one holds the key)."""
        raise NotImplementedError

    def _active(self, key: str) -> str | None:
        with self.db.session() as s:
            found = s.scalar(select(JobRow.id).where(JobRow.key == key, JobRow.state.in_(ACTIVE))
                             .order_by(JobRow.created_at).limit(1))
        return str(found) if found is not None else None

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobInfo:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            return JobInfo.of(row)

    def recent(self, *, state: str | None = None, task: str | None = None, limit: int = 50) -> list[JobInfo]:
        """Newest first."""
        if state is not None and state not in {s.value for s in JobState}:
            raise BadInput(f"unknown job state {state!r}; one of {', '.join(s.value for s in JobState)}")
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(max(1, min(limit, 1000)))
        if state is not None:
            query = query.where(JobRow.state == state)
        if task is not None:
            query = query.where(JobRow.task == task)
        with self.db.session() as s:
            return [JobInfo.of(r) for r in s.scalars(query)]

    # -- running ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Where this process runs jobs itself: picks up unfinished ones and starts the periodic ones."""

    def flush(self, timeout: float = 120.0) -> bool:
        """Waits until the jobs this process runs are done (tests, shutdown); True if none is left."""
        return True

    def close(self) -> None:
        """Stops what ``start`` started."""

    def _report(self, job_id: str) -> Callable[[float, str], None]:
        def report(fraction: float, detail: str) -> None:
            try:
                with self.db.session() as s:
                    row = s.get(JobRow, job_id)
                    if row is not None:
                        row.progress = fraction
                        row.detail = detail
            except Exception:  # noqa: BLE001 - progress is informative; the job goes on
                log.warning("could not record the progress of job %s", job_id, exc_info=True)

        return report

    def _execute(self, job_id: str, worker: str) -> _Outcome:
        """One attempt of a job: marks it running, calls its function, records the outcome."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                log.warning("job %s has no row (deleted?): skipped", job_id)
                return _Outcome.DONE
            if row.state in (JobState.SUCCEEDED.value, JobState.FAILED.value):
                return _Outcome.DONE  # delivered twice: it finished already
            task = self._tasks.get(row.task)
            attempt = row.attempts + 1
            if task is None or attempt > row.max_attempts:
                row.state = JobState.FAILED.value
                row.error = (f"no job function {row.task!r} in this worker" if task is None
                             else f"gave up after {row.attempts} attempts; last: {row.error}")[:4000]
                row.finished_at = utcnow()
                return _Outcome.FAILED
            row.state = JobState.RUNNING.value
            row.attempts = attempt
            row.worker = worker
            row.started_at = row.started_at or utcnow()
            args = dict(row.args or {})
            name = row.task
        ctx = JobContext(job_id, attempt, self._report(job_id))
        started = time.perf_counter()
        try:
            result = task.fn(ctx, **args)
        except Exception as exc:  # noqa: BLE001 - recorded on the job; retried unless it is bad input
            telemetry.observe_job(name, time.perf_counter() - started, failed=True)
            final = isinstance(exc, LookloopError) or attempt >= task.max_attempts
            message = exc.message if isinstance(exc, LookloopError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, LookloopError):
                log.exception("job %s (%s) attempt %d failed", job_id, task.fn, attempt)
            with self.db.session() as s:
                row = s.get(JobRow, job_id)
                if row is not None:
                    row.state = (JobState.FAILED if final else JobState.RETRYING).value
                    row.error = message[:4000]
                    if final:
                        row.finished_at = utcnow()
            return _Outcome.FAILED if final else _Outcome.RETRY
        telemetry.observe_job(name, time.perf_counter() - started)
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                row.state = JobState.SUCCEEDED.value
                row.progress = 1.0
                row.result = _json_safe(result)
                row.error = ""
                row.finished_at = utcnow()
        return _Outcome.DONE

    def prune(self, older_than: dt.timedelta) -> int:
        """Deletes the rows of jobs that finished (succeeded or failed) longer than ``older_than`` ago; returns
        how many. Jobs still waiting or running are never touched, however old."""
        cutoff = utcnow() - older_than
        with self.db.session() as s:
            gone = s.execute(delete(JobRow).where(JobRow.state.in_(FINISHED), JobRow.finished_at < cutoff))
        return int(getattr(gone, "rowcount", 0) or 0)

    def _unfinished(self) -> list[str]:
        with self.db.session() as s:
            return [str(x) for x in s.scalars(select(JobRow.id).where(JobRow.state.in_(ACTIVE))
                                              .order_by(JobRow.created_at))]


# Job threads still open: stopped when the interpreter exits (see ``InProcessJobs.close``).
_OPEN: weakref.WeakSet[InProcessJobs] = weakref.WeakSet()
# Wakes the job thread to see that it must stop.
_STOP = ""


class InProcessJobs(JobQueue):
    """SQLite, one process: jobs run in a background thread of the server (lower priority than asks).

    A job is written to the ``jobs`` table before it runs, so one that a crash interrupted — or that was still
    queued when the process stopped — runs again when the server starts (``start``).
    """

    kind = "in-process"

    def __init__(self, db: Database, *, max_attempts: int = 3, retry_wait_s: float = 5.0) -> None:
        super().__init__(db, max_attempts=max_attempts, retry_wait_s=retry_wait_s)
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        _OPEN.add(self)

    def _submit(self, name: str, key: str | None, args: dict[str, Any]) -> str:
        with self.db.session() as s:
            row = self._row(name, key, args)
            s.add(row)
        return self._enqueue(row.id)

    def _enqueue(self, job_id: str) -> str:
        with self._idle:
            self._pending += 1
        self._queue.put(job_id)
        with self._guard:
            if not self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="lookloop-jobs", daemon=True)
                self._thread.start()
        return job_id

    def _run(self) -> None:
        try:
            # Background work yields to answering asks (threads this one starts inherit the priority).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (OSError, AttributeError):
            pass
        name = f"{worker_name()}:in-process"
        while True:
            try:
                job_id = self._queue.get(timeout=30)
            except queue.Empty:
                with self._guard:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if self._stop.is_set():
                return  # what is still queued stays in the jobs table for the next start
            outcome = _Outcome.FAILED
            try:
                outcome = self._execute(job_id, name)
            except Exception:  # noqa: BLE001 - the table could not be written; the job stays for the next start
                log.exception("job %s could not run", job_id)
            if outcome == _Outcome.RETRY and not self._stop.is_set():
                timer = threading.Timer(self.retry_wait_s, self._queue.put, (job_id,))
                timer.daemon = True
                timer.start()
                continue
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def start(self) -> None:
        for job_id in self._unfinished():
            self._enqueue(job_id)
        periodic = [(name, t.every_s) for name, t in self._tasks.items() if t.every_s > 0]
        if periodic and self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, args=(periodic,), name="lookloop-jobs-periodic",
                                            daemon=True)
            self._ticker.start()

    def _tick(self, periodic: list[tuple[str, float]]) -> None:
        due = {name: time.monotonic() + every for name, every in periodic}
        while not self._stop.wait(1.0):
            now = time.monotonic()
            for name, every in periodic:
                if now >= due[name]:
                    due[name] = now + every
                    try:
                        self.defer(name, key=name)
                    except Exception:  # noqa: BLE001 - the next period tries again
                        log.exception("could not queue the periodic job %s", name)

    def flush(self, timeout: float = 120.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stops the job thread once its current job is done (the queued ones run at the next start).

        Called at interpreter exit too: a daemon thread still inside native code (OpenCV, ONNX Runtime) while
        the interpreter finalises aborts the process.
        """
        self._stop.set()
        self._ticker = None
        with self._guard:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            self._queue.put(_STOP)
            thread.join(timeout)
        _OPEN.discard(self)


@atexit.register
def _close_open_queues() -> None:
    for jobs in list(_OPEN):
        jobs.close()


class PostgresJobs(JobQueue):
    """Postgres: jobs go to a procrastinate queue; ``lookloop worker`` processes (any number, any machine) run them.

    A worker sends a heartbeat; a job whose worker stopped sending one for ``stalled_after_s`` (killed, lost its
    machine) is put back by the other workers and runs again.
    """

    kind = "postgres"

    def __init__(self, db: Database, *, max_attempts: int = 3, retry_wait_s: float = 5.0,
                 stalled_after_s: float = 30.0) -> None:
        super().__init__(db, max_attempts=max_attempts, retry_wait_s=retry_wait_s)
        import procrastinate

        self.stalled_after_s = max(1.0, stalled_after_s)
        conninfo = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1,
                                                                              max_size=4))
        # Deferring runs procrastinate's insert on the connection of the session that writes the job's row
        # (never opened: it borrows that connection), so the two commit or roll back together.
        self._deferrer = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=conninfo))

    def register(self, name: str, fn: JobFn, *, max_attempts: int | None = None, every_s: float = 0.0) -> None:
        super().register(name, fn, max_attempts=max_attempts, every_s=every_s)
        import procrastinate

        queue_ = self

        class _Retry(procrastinate.BaseRetryStrategy):
            """Retry what our attempt said to retry, after the configured wait."""

            def get_retry_decision(self, *, exception: BaseException,
                                   job: Any) -> procrastinate.RetryDecision | None:
                if not isinstance(exception, _RetryLater):
                    return None
                return procrastinate.RetryDecision(retry_in={"seconds": int(queue_.retry_wait_s)})

        def run(context: procrastinate.JobContext, job_id: str) -> None:
            outcome = queue_._execute(job_id, f"{worker_name()}:{context.worker_name or 'worker'}")
            if outcome == _Outcome.RETRY:
                raise _RetryLater(job_id)
            if outcome == _Outcome.FAILED:
                raise _Failed(job_id)

        self._app.task(name=name, pass_context=True, retry=_Retry())(run)

    def _submit(self, name: str, key: str | None, args: dict[str, Any]) -> str:
        """The row and procrastinate's job in one transaction: a process dying between the two leaves neither,
        so no row waits "queued" for a job nobody will run."""
        from procrastinate.exceptions import AlreadyEnqueued

        for _ in range(3):
            try:
                with self.db.session() as s:
                    row = self._row(name, key, args)
                    s.add(row)
                    s.flush()
                    connection = _driver_connection(s)
                    queue_id = self._deferrer.configure_task(name=name, queueing_lock=key,
                                                             connection=connection).defer(job_id=row.id)
                    row.queue_id = int(queue_id)
                return row.id
            except AlreadyEnqueued:
                # Another process queued the same work first (its row and job committed together): that one.
                existing = self._active(key) if key is not None else None
                if existing is not None:
                    return existing
        raise LookloopError(f"job {name!r} with key {key!r} could not be queued: its key stayed taken")

    def prune(self, older_than: dt.timedelta) -> int:
        """Also deletes procrastinate's own finished jobs (failed ones stay there for inspection) as old."""
        from procrastinate import sql

        removed = super().prune(older_than)
        with self.db.session() as s:
            _driver_connection(s).execute(sql.queries["delete_old_jobs"], {
                "nb_hours": max(1, int(older_than.total_seconds() // 3600)), "queue": None,
                "statuses": ["succeeded", "failed", "cancelled", "aborted"]})
        return removed

    def close(self) -> None:
        """Nothing to close: deferring borrows the database session's connection, the worker opens its own."""

    # -- the worker ---------------------------------------------------------------------------------------

    def run_worker(self, *, concurrency: int = 1, name: str = "worker", wait: bool = True) -> None:
        """Runs jobs until SIGINT/SIGTERM (``wait`` False: until the queue is empty). Also puts back the jobs of
        workers that died and queues the periodic jobs."""
        asyncio.run(self._worker(concurrency=max(1, concurrency), name=name, wait=wait))

    async def _worker(self, *, concurrency: int, name: str, wait: bool) -> None:
        async with self._app.open_async():
            side = [asyncio.create_task(self._sweep_forever())]
            side += [asyncio.create_task(self._periodic(task, t.every_s))
                     for task, t in self._tasks.items() if t.every_s > 0]
            try:
                await self._app.run_worker_async(
                    concurrency=concurrency, name=name, wait=wait, delete_jobs="successful",
                    update_heartbeat_interval=self.stalled_after_s / 4, stalled_worker_timeout=self.stalled_after_s,
                    fetch_job_polling_interval=2.0,
                )
            finally:
                for t in side:
                    t.cancel()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("the sweep for jobs of stopped workers failed")
            await asyncio.sleep(self.stalled_after_s / 4)

    async def sweep(self) -> int:
        """Puts back the jobs of workers that stopped sending heartbeats; returns how many."""
        manager = self._app.job_manager
        stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self.stalled_after_s)
        put_back = 0
        for job in stalled:
            try:
                await manager.retry_job(job)
            except Exception:  # noqa: BLE001 - another worker put it back first
                continue
            put_back += 1
            job_id = str(job.task_kwargs.get("job_id", ""))
            await asyncio.to_thread(self._mark_lost, job_id)
        await manager.prune_stalled_workers(self.stalled_after_s)
        return put_back

    def _mark_lost(self, job_id: str) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None and row.state == JobState.RUNNING.value:
                row.state = JobState.RETRYING.value
                row.error = f"its worker ({row.worker}) stopped without finishing it"[:4000]
        log.warning("job %s: its worker stopped; it runs again", job_id)

    async def _periodic(self, task: str, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await asyncio.to_thread(self.defer, task, key=task)  # the previous run still waits or runs: that one
            except Exception:  # noqa: BLE001 - the next period tries again
                log.exception("could not queue the periodic job %s", task)


def _driver_connection(session: Session) -> Any:
    """The psycopg connection under a session, inside the session's transaction."""
    connection = session.connection().connection.driver_connection
    if connection is None:
        raise RuntimeError("the database session has no open connection")
    return connection


class _RetryLater(Exception):
    """An attempt failed and the job runs again."""


class _Failed(Exception):
    """The job failed for good (recorded on its row)."""


def job_queue(db: Database, *, max_attempts: int = 3, retry_wait_s: float = 5.0,
              stalled_after_s: float = 30.0) -> JobQueue:
    """Procrastinate on Postgres; a thread of this process on SQLite."""
    if db.engine.dialect.name == "postgresql":
        return PostgresJobs(db, max_attempts=max_attempts, retry_wait_s=retry_wait_s,
                            stalled_after_s=stalled_after_s)
    return InProcessJobs(db, max_attempts=max_attempts, retry_wait_s=retry_wait_s)
