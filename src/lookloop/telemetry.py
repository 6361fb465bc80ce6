"""Live process figures for Prometheus: ask latency by skill, escalations, jobs, and each worker's health.

The operator figures of ``lookloop.metrics`` are computed from the database over days; these are counters and
histograms kept by the running processes, scraped at ``/metrics`` (Prometheus text format).

One process: the figures live in this process. Several workers: call ``prepare_multiprocess(directory)`` in the
process that starts them, before they start (it sets ``PROMETHEUS_MULTIPROC_DIR``, which prometheus-client reads
when it is first imported); each worker then writes its figures to files there and a scrape of any worker
adds every worker's up (prometheus-client's multiprocess mode). Call ``worker_exited(pid)`` when a worker ends,
so that its health figures leave the scrape.

Jobs report with ``observe_job`` or the ``timed_job`` context manager.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Identify's target is 25 ms at p50 and 50 ms at p95: the buckets are fine around them.
_ASK_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

ASK_SECONDS = Histogram("lookloop_ask_seconds", "Time to answer an ask (decode to stored answer), by skill.",
                        ["skill"], buckets=_ASK_BUCKETS)
ESCALATIONS = Counter("lookloop_escalations", "Asks handed to a person, by skill.", ["skill"])
JOB_SECONDS = Histogram("lookloop_job_seconds", "Duration of background jobs, by job.", ["job"], buckets=_JOB_BUCKETS)
JOB_FAILURES = Counter("lookloop_job_failures", "Background jobs that failed, by job.", ["job"])
WORKER_START = Gauge("lookloop_worker_start_time_seconds", "When this worker process started (Unix time).",
                     ["worker"], multiprocess_mode="liveall")
WORKER_UP = Gauge("lookloop_worker_up", "1 for every worker process serving now.", ["worker"],
                  multiprocess_mode="liveall")

_STARTED = time.time()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess(directory: Path) -> None:
    """Before starting several workers: an empty figures directory, named in the environment they inherit."""
    if directory.exists():
        shutil.rmtree(directory)  # figures of a previous run would be added to this one's
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)


def worker_exited(pid: int) -> None:
    """A worker ended (call from the process that started it): its live gauges leave the scrape."""
    if multiprocess_dir():
        _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def register_worker(worker_id: str = "") -> str:
    """Marks this process as a serving worker (its health figures); returns the id it is shown under."""
    wid = worker_id or default_worker_id()
    WORKER_START.labels(wid).set(_STARTED)
    WORKER_UP.labels(wid).set(1)
    return wid


def observe_ask(skill: str, seconds: float, *, escalated: bool) -> None:
    ASK_SECONDS.labels(skill).observe(max(0.0, seconds))
    if escalated:
        ESCALATIONS.labels(skill).inc()


def observe_job(job: str, seconds: float, *, failed: bool = False) -> None:
    """One background job ran for ``seconds`` (and failed, or not)."""
    JOB_SECONDS.labels(job).observe(max(0.0, seconds))
    if failed:
        JOB_FAILURES.labels(job).inc()


@contextmanager
def timed_job(job: str) -> Iterator[None]:
    """Times the block as one run of ``job``; an exception counts as a failure (and is raised on)."""
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        observe_job(job, time.perf_counter() - start, failed=True)
        raise
    observe_job(job, time.perf_counter() - start)


class _Forward:
    """This process's own figures, for a scrape that adds others."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()


class _Queue:
    """The review queue as it is now (read from the database at each scrape: the same on every worker)."""

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterable[Any]:
        counts = self.counts()
        yield GaugeMetricFamily("lookloop_review_queue_depth", "Review items waiting for a person.",
                                value=counts.get("open", 0))
        yield GaugeMetricFamily("lookloop_live_waits", "Wearers waiting live for a person's answer now.",
                                value=counts.get("live", 0))


def render(queue_counts: Callable[[], Mapping[str, int]] | None = None) -> bytes:
    """The Prometheus text of every worker's figures (this process's alone without multiprocess mode)."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    if queue_counts is not None:
        registry.register(_Queue(queue_counts))
    return generate_latest(registry)
