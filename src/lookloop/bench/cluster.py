"""``lookloop bench cluster``: many wearers against N API workers sharing one Postgres, one worker killed mid-run.

Each API worker is its own process on its own port (as on separate machines behind a load balancer), so the
benchmark can send an ask to worker A and hold a reviewer socket on worker B. Wearers run closed loops (ask,
think, ask again) from one asyncio process; every ask carries an ``Idempotency-Key`` and is resent to another
worker when its worker dies, so ``lost`` and ``duplicated`` are checked against the database afterwards.

Two phases, each on freshly started workers: first N workers at ``--think`` pauses with the probes and, with
``--kill-one``, one worker killed half-way; then the capacity at saturation (wearers ask again as soon as they are
answered), in turns of one worker and of N on the same workers (the spare ones stand idle in the one-worker turns),
in the order 1, N, N, 1, 1, N, N, 1, so that whatever else the machine does meanwhile, and any drift, weighs on both
alike. The workers are set up as N sharing this machine's cores (``lookloop serve --workers N``).
The first seconds of each phase and turn (wearers coming online) are not counted.

Figures:
- ``asks_per_s``, ``asks_per_s_1_worker``: identify asks answered per second at saturation, N workers and one;
- ``throughput_ratio_2v1``: their ratio, same wearers, same run;
- ``load_asks_per_s``, ``load_share_of_capacity``: the load of the third phase, where the rest are measured;
- ``identify_p50_ms``, ``identify_p95_ms``: a wearer's wait from the first try to the answer, before the kill;
- ``dispatch_p95_ms``: an escalation stored on worker A → the item on a reviewer socket held by worker B (one
  that never comes within 5 s counts as 5 s); while B is down the reviewer's page is on A, as behind a load
  balancer, and no probe is taken;
- ``label_effect_p95_ms``: a label posted to worker A → the same photo answered with it by worker B;
- ``lost``, ``duplicated``: over all three phases, checked against the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import websockets
from sqlalchemy import select

from lookloop.bench._common import (
    ServerProcess,
    console,
    fail,
    make_progress,
    percentile,
    print_figures,
    write_json,
)
from lookloop.catalog import GroceryDataset, grocery_catalog
from lookloop.config import Settings, get_settings
from lookloop.errors import BadInput, LookloopError
from lookloop.humans.accounts import Accounts
from lookloop.privacy.consent import ConsentService
from lookloop.store.db import Database
from lookloop.store.localpg import NOT_INSTALLED, LocalPostgres, free_port, postgres_bin
from lookloop.store.tables import AskRow, IdempotencyRow
from lookloop.system import Lookloop


@dataclass
class Prepared:
    wearer_tokens: list[str]
    wearer_devices: list[str]
    reviewer_token: str
    operator_token: str
    probe_token: str
    images: list[bytes]
    probe_images: list[bytes]
    labels: list[str]


@dataclass
class Ledger:
    """What the wearers sent and what came back."""

    acked: dict[str, str] = field(default_factory=dict)  # idempotency key -> ask id
    pending: set[str] = field(default_factory=set)  # keys sent, not acknowledged yet
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (finished at, ms)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    retries: int = 0
    probe_problems: list[str] = field(default_factory=list)
    label_posts: list[float] = field(default_factory=list)  # ms for worker A to take a probe's label

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


def prepare(settings: Settings, wearers: int, classes: int | None = None, escalated_share: float = 1.0) -> Prepared:
    """The demo catalogue and labels (or ``classes`` products, a few photos each), device tokens and accounts,
    made in process before the workers start. Only ``escalated_share`` of the wearers let unsure answers go to a
    person (the rest turned ``human_review`` off): the share of asks people see at the coverage the loop aims for,
    where the demo model alone is unsure of nearly everything."""
    system = Lookloop(settings)
    try:
        system.migrate()
        ds = GroceryDataset(settings.grocery_dir)
        if classes is None:
            system.import_grocery(settings.grocery_dir)
        else:
            items = grocery_catalog(settings.grocery_dir)[:classes]
            system.upsert_items(items)
            names = {i.name for i in items}
            system.import_labelled_images([i for i in ds.split("train") if i.label in names][: 6 * classes],
                                          source="import")
        system.build_identify()  # embeddings and the head are cached: the workers start from the caches
        known = {i.name for i in system.catalogue.items()}
        accounts = Accounts(system.db)
        made = [accounts.add_device(f"cluster-wearer-{i}") for i in range(wearers)]
        consent = ConsentService(system.db)
        for device, _ in made[round(escalated_share * wearers):]:
            consent.set(device.wearer_id, human_review=False)
        probe = accounts.add_device("cluster-probe")[1]
        accounts.add_account("cluster-reviewer", "reviewer", "cluster-password-1")
        reviewer, _ = accounts.login("cluster-reviewer", "cluster-password-1")
        accounts.add_account("cluster-operator", "operator", "cluster-password-1")
        operator, _ = accounts.login("cluster-operator", "cluster-password-1")
        val = [i for i in ds.split("val") if i.label in known]
        rng = random.Random(0)
        rng.shuffle(val)
        cut = min(40, len(val) // 2)  # the wearers' photos; the rest are each labelled once by the probe
        images = [i.path.read_bytes() for i in val[:cut]]
        probes = [i.path.read_bytes() for i in val[cut:]]
        labels = sorted({i.label for i in val})
    finally:
        system.close()
    return Prepared([t for _, t in made], [d.id for d, _ in made], reviewer, operator, probe, images, probes, labels)


CAPACITY_TURNS = 4  # turns of 1 worker and of N each, in the order 1, N, N, 1, 1, N, N, 1


@dataclass
class Capacity:
    """Asks answered at saturation over the counted windows of one worker count's turns."""

    ledgers: list[Ledger] = field(default_factory=list)
    window: float = 0.0
    busy_windows: list[tuple[float, float]] = field(default_factory=list)  # (busy share, seconds)

    def add(self, ledger: Ledger, window: float, busy: float) -> None:
        self.ledgers.append(ledger)
        self.window += window
        if busy == busy:  # not NaN
            self.busy_windows.append((busy, window))

    @property
    def rate(self) -> float:
        return sum(len(x.latencies) for x in self.ledgers) / self.window if self.window else 0.0

    @property
    def busy(self) -> float:
        total = sum(w for _, w in self.busy_windows)
        return sum(b * w for b, w in self.busy_windows) / total if total else float("nan")


class Workers:
    """N API worker processes on one database and one shared var dir."""

    def __init__(self, env: dict[str, str], n: int, log_dir: Path, job_workers: int = 0) -> None:
        self.env, self.log_dir, self.n_jobs = env, log_dir, job_workers
        self.procs = [ServerProcess(env, free_port(), log_dir / f"api-{i}.log") for i in range(n)]
        self.jobs: list[subprocess.Popen[bytes]] = []
        self.down: set[int] = set()
        self.serving = n  # the first ``serving`` workers take the wearers' asks (the rest stand idle)

    def start(self) -> None:
        with ThreadPoolExecutor(len(self.procs)) as pool:  # they load their models side by side
            list(pool.map(lambda p: p.start(timeout=900.0), self.procs))
        for i in range(self.n_jobs):
            with (self.log_dir / f"jobs-{i}.log").open("ab") as log:
                self.jobs.append(subprocess.Popen(
                    # On this one machine background jobs take only the CPU the API workers leave (`cluster up`).
                    [sys.executable, "-m", "lookloop.cli", "worker", "--name", f"bench-jobs-{i}", "--idle"],
                    env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for p in self.procs:
            p.stop()
        for j in self.jobs:
            j.terminate()
        for j in self.jobs:
            try:
                j.wait(timeout=20)
            except subprocess.TimeoutExpired:
                j.kill()

    def url(self, i: int) -> str:
        return self.procs[i].base

    def alive(self, preferred: int) -> int:
        """``preferred`` when it is up, else the next worker that is (of those serving)."""
        n = self.serving
        for k in range(n):
            i = (preferred + k) % n
            if i not in self.down:
                return i
        return preferred


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every wearer's client: each of its own would load the CA bundle again (40 ms of the
    load generator's CPU per wearer, seconds of it while a phase's wearers come online)."""
    return ssl.create_default_context()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleeps ``seconds`` unless the phase ends first (a long think time would otherwise hold the phase open)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wearer(workers: Workers, idx: int, token: str, images: list[bytes], ledger: Ledger,
                  stop: asyncio.Event, think_s: float, rng: random.Random) -> None:
    # Each wearer is its own device with its own connection, as on the road; one pool shared by hundreds of
    # wearers would also cost the load generator time that grows with the square of their number (the pool scans
    # every connection for every request).
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=2), verify=_tls()) as http:
        await _wearer_loop(http, workers, idx, token, images, ledger, stop, think_s, rng)


async def _wearer_loop(http: httpx.AsyncClient, workers: Workers, idx: int, token: str, images: list[bytes],
                       ledger: Ledger, stop: asyncio.Event, think_s: float, rng: random.Random) -> None:
    n = 0
    home = idx % workers.serving
    if think_s > 0:  # wearers come online over one pause, not all in the same instant
        await _pause(stop, rng.uniform(0, 2 * think_s))
    while not stop.is_set():
        n += 1
        key = f"w{idx}-{n}-{uuid.uuid4().hex[:8]}"
        image = images[rng.randrange(len(images))]
        ledger.pending.add(key)
        attempt = 0
        t0 = time.perf_counter()  # the wearer's wait runs from the first try to the answer, retries included
        while True:
            target = workers.alive(home + attempt)
            try:
                r = await http.post(workers.url(target) + "/v1/asks",
                                    data={"question": "what is this?", "skill": "identify"},
                                    files={"image": ("f.jpg", image, "image/jpeg")},
                                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 200:
                ledger.acked[key] = str(r.json()["id"])
                ledger.pending.discard(key)
                ledger.latencies.append((time.monotonic(), (time.perf_counter() - t0) * 1000))
                break
            if r is not None and r.status_code < 500 and r.status_code != 429:
                ledger.error(f"ask {r.status_code}: {r.text[:160]}")
                ledger.pending.discard(key)
                break
            # The worker is gone (or overloaded): resend the same key to another one, as a device's outbox does.
            attempt += 1
            ledger.retries += 1
            if attempt > 60:
                break  # stays pending: counted lost
            await asyncio.sleep(0.1)
        if think_s > 0:
            await _pause(stop, rng.uniform(0, 2 * think_s))


async def _reviewer_reads(ws: Any, mine: asyncio.Queue[tuple[float, dict[str, Any]]], http: httpx.AsyncClient,
                          base: str, auth: dict[str, str]) -> None:
    """Reads the probe reviewer's socket all the time: the probe's items (with when they came) go to ``mine``;
    wearers' asks pushed to this reviewer are left to others at once, so the few items a reviewer holds at a time
    are free whenever the probe's ask comes."""
    async for raw in ws:
        msg = json.loads(raw)
        item = msg.get("item") if msg.get("type") == "item" else None
        if not item:
            continue
        if "please help me with" in str(item.get("question", "")):
            await mine.put((time.time(), item))
            continue
        with contextlib.suppress(httpx.HTTPError):
            await http.post(base + f"/v1/review/items/{item['id']}/skip", headers=auth)


@contextlib.asynccontextmanager
async def _reading(ws: Any, mine: asyncio.Queue[tuple[float, dict[str, Any]]], http: httpx.AsyncClient, base: str,
                   auth: dict[str, str]) -> AsyncIterator[asyncio.Task[None]]:
    """The reviewer's socket read in the background (``_reviewer_reads``) while the block runs."""
    reader = asyncio.create_task(_reviewer_reads(ws, mine, http, base, auth))
    try:
        yield reader
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def _dispatch_probe(http: httpx.AsyncClient, workers: Workers, p: Prepared, stop: asyncio.Event,
                          out: list[float], problems: list[str]) -> None:
    """A reviewer on worker B; asks that need a person go to worker A; the time from escalation to the socket."""
    if len(workers.procs) < 2:
        return
    a, b = 0, 1
    ws_url = workers.url(b).replace("http://", "ws://") + f"/v1/review/stream?token={p.reviewer_token}"
    device_url = workers.url(b).replace("http://", "ws://") + f"/v1/devices/stream?token={p.probe_token}"
    auth = {"Authorization": f"Bearer {p.reviewer_token}"}
    while not stop.is_set():
        if b in workers.down and a not in workers.down:
            await _review_elsewhere(http, workers, a, b, p, stop, problems)
            continue
        if a in workers.down or b in workers.down:
            await asyncio.sleep(0.2)
            continue
        try:
            # The wearer keeps a device stream open (online: their asks are live and offered at once).
            async with websockets.connect(ws_url, max_size=2**22) as ws, \
                    websockets.connect(device_url, max_size=2**22) as device:
                await ws.recv()  # hello
                await device.recv()
                mine: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
                async with _reading(ws, mine, http, workers.url(b), auth) as reader:
                    while not stop.is_set() and a not in workers.down and not reader.done():
                        tag = uuid.uuid4().hex[:8]
                        r = await http.post(workers.url(a) + "/v1/asks",
                                            data={"question": f"please help me with {tag}", "skill": "human"},
                                            headers={"Authorization": f"Bearer {p.probe_token}"})
                        if r.status_code != 200:
                            problems.append(f"dispatch ask {r.status_code}: {r.text[:120]}")
                        deadline = time.monotonic() + 5.0
                        while True:
                            getter = asyncio.ensure_future(mine.get())
                            await asyncio.wait({getter, reader}, timeout=max(0.01, deadline - time.monotonic()),
                                               return_when=asyncio.FIRST_COMPLETED)
                            if not getter.done():
                                getter.cancel()
                                if reader.done():  # worker B was killed under the socket: no figure to take
                                    problems.append("dispatch: the reviewer's worker went down mid-probe")
                                else:
                                    problems.append("dispatch: no item on the reviewer socket within 5 s")
                                    out.append(5000.0)  # counted at the cap, as an escalation that never came
                                break
                            got, item = getter.result()
                            if tag not in str(item.get("question", "")):
                                continue  # an earlier probe's, late
                            out.append((got - float(item["escalated_at"])) * 1000)
                            r = await http.post(workers.url(b) + f"/v1/review/items/{item['id']}/answer",
                                                json={"action": "answer", "value": "A helper is on it."},
                                                headers=auth)
                            if r.status_code != 200 or not r.json().get("resolved"):
                                problems.append(f"dispatch answer {r.status_code}: {r.text[:120]}")
                            break
                        await asyncio.sleep(0.5)
        except (OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
            problems.append(f"dispatch: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.3)


async def _review_elsewhere(http: httpx.AsyncClient, workers: Workers, at: int, back: int, p: Prepared,
                            stop: asyncio.Event, problems: list[str]) -> None:
    """While the probe reviewer's worker is down, their page is on another worker (as behind a load balancer, it
    reconnects at once) and goes on passing the wearers' items on; no probe is counted until ``back`` is up.
    Without this the reviewer would be off duty for the whole restart, and the first probes after it would wait
    behind every live item that came meanwhile: a reviewer shortage, not the live path's speed."""
    ws_url = workers.url(at).replace("http://", "ws://") + f"/v1/review/stream?token={p.reviewer_token}"
    auth = {"Authorization": f"Bearer {p.reviewer_token}"}
    try:
        async with websockets.connect(ws_url, max_size=2**22) as ws:
            await ws.recv()  # hello
            ignored: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
            async with _reading(ws, ignored, http, workers.url(at), auth) as reader:
                while back in workers.down and at not in workers.down and not stop.is_set() and not reader.done():
                    await asyncio.sleep(0.1)
    except (OSError, websockets.WebSocketException, httpx.HTTPError) as exc:
        problems.append(f"dispatch (reviewing on another worker): {type(exc).__name__}: {exc}")
        await asyncio.sleep(0.3)


async def _label_probe(http: httpx.AsyncClient, workers: Workers, p: Prepared, stop: asyncio.Event,
                       out: list[float], problems: list[str], posts: list[float]) -> None:
    """A label posted to worker A, then the same photo asked on worker B until the answer uses it."""
    if len(workers.procs) < 2:
        return
    a, b = 0, 1
    device = {"Authorization": f"Bearer {p.probe_token}"}
    operator = {"Authorization": f"Bearer {p.operator_token}"}
    rng = random.Random(1)
    for image in p.probe_images:
        if stop.is_set():
            return
        if a in workers.down or b in workers.down:
            await asyncio.sleep(0.5)
            continue
        try:
            r = await http.post(workers.url(a) + "/v1/asks", data={"question": "what is this?", "skill": "identify"},
                                files={"image": ("f.jpg", image, "image/jpeg")}, headers=device)
            if r.status_code != 200:
                problems.append(f"label probe ask {r.status_code}: {r.text[:120]}")
                continue
            ask = r.json()
            before = str(ask["answer"]["result"].get("label", ""))
            wrong = rng.choice([lab for lab in p.labels if lab != before])
            t0 = time.perf_counter()
            r = await http.post(workers.url(a) + f"/v1/asks/{ask['id']}/labels",
                                json={"value": wrong, "source": "human"}, headers=operator)
            if r.status_code != 200:
                problems.append(f"label probe label {r.status_code}: {r.text[:120]}")
                continue
            posts.append((time.perf_counter() - t0) * 1000)
            while time.perf_counter() - t0 < 10.0:
                r = await http.post(workers.url(b) + "/v1/asks",
                                    data={"question": "what is this?", "skill": "identify"},
                                    files={"image": ("f.jpg", image, "image/jpeg")}, headers=device)
                if r.status_code == 200 and r.json()["answer"]["result"].get("label") == wrong:
                    out.append((time.perf_counter() - t0) * 1000)
                    break
                await asyncio.sleep(0.05)
            else:
                out.append(10_000.0)  # never took effect in 10 s: counted at the cap
        except httpx.HTTPError as exc:
            problems.append(f"label probe: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine since boot, or None where /proc/stat is not there."""
    try:
        fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + waiting for I/O
    return sum(fields) - idle, sum(fields)


def _busy_share(start: tuple[float, float] | None, end: tuple[float, float] | None) -> float:
    """The share of the machine's CPU time that was busy between two readings (NaN where unknown)."""
    if start is None or end is None or end[1] <= start[1]:
        return float("nan")
    return (end[0] - start[0]) / (end[1] - start[1])


async def _restart(workers: Workers, i: int, after_s: float = 2.0) -> None:
    await asyncio.sleep(after_s)
    await asyncio.to_thread(workers.procs[i].start, 900.0)
    workers.down.discard(i)


async def _phase(workers: Workers, p: Prepared, *, wearers: int, duration: float, think_s: float,
                 kill_at: float | None, probes: bool, seed: int,
                 tick: Callable[[float], None]) -> tuple[Ledger, list[float], list[float], float, float]:
    """One load phase: (ledger, dispatch ms, label effect ms, seconds measured, busy share of the CPU)."""
    ledger = Ledger()
    stop = asyncio.Event()
    dispatch: list[float] = []
    effect: list[float] = []
    killed_at: float | None = None
    async with httpx.AsyncClient(timeout=30.0) as http:  # the probes'
        tasks = [asyncio.create_task(_wearer(workers, i, p.wearer_tokens[i], p.images, ledger, stop, think_s,
                                             random.Random(seed * 1000 + i))) for i in range(wearers)]
        if probes:
            tasks.append(asyncio.create_task(_dispatch_probe(http, workers, p, stop, dispatch, ledger.probe_problems)))
            tasks.append(asyncio.create_task(_label_probe(http, workers, p, stop, effect, ledger.probe_problems,
                                                          ledger.label_posts)))
        t0 = time.monotonic()
        # Throughput and latency are steady-state figures: the first seconds, while wearers come online and the
        # queues fill, are not counted.
        settle = min(5.0, duration / 4)
        cpu_start: tuple[float, float] | None = None
        cpu_end: tuple[float, float] | None = None
        restart: asyncio.Task[None] | None = None
        while (elapsed := time.monotonic() - t0) < duration:
            if cpu_start is None and elapsed >= settle:
                cpu_start = _cpu_times()
            if kill_at is not None and killed_at is None and elapsed >= kill_at:
                cpu_end = _cpu_times()
                victim = len(workers.procs) - 1
                workers.down.add(victim)
                workers.procs[victim].kill()
                killed_at = time.monotonic()
                restart = asyncio.create_task(_restart(workers, victim))  # as a process supervisor would
            tick(min(elapsed, duration))
            await asyncio.sleep(0.25)
        if cpu_end is None:
            cpu_end = _cpu_times()
        if restart is not None:
            await restart
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=120.0)
    window_end = killed_at if killed_at is not None else time.monotonic()
    ledger.latencies = [(t, ms) for t, ms in ledger.latencies if t0 + settle <= t <= window_end]
    return ledger, dispatch, effect, (window_end - t0 - settle), _busy_share(cpu_start, cpu_end)


def _verify(db_url: str, devices: set[str], ledgers: list[Ledger]) -> tuple[int, int]:
    """(lost, duplicated): asks acknowledged but missing, or never acknowledged; asks stored twice for one key."""
    db = Database(db_url)
    try:
        with db.session() as s:
            receipts = dict(s.execute(select(IdempotencyRow.key, IdempotencyRow.result_id)
                                      .where(IdempotencyRow.kind == "ask")).all())
            stored = set(s.scalars(select(AskRow.id).where(AskRow.device_id.in_(devices))))
    finally:
        db.dispose()
    lost = 0
    for ledger in ledgers:
        lost += len(ledger.pending)
        lost += sum(1 for k, a in ledger.acked.items() if receipts.get(k) != a or a not in stored)
    # Every wearer ask carries a key: a stored ask that no receipt names is a second copy of a keyed ask.
    duplicated = len(stored - set(receipts.values()))
    return lost, duplicated


def run_cluster_bench(
    *, workers: int, wearers: int, duration: float, kill_one: bool, database_url: str, think_s: float = 30.0,
    seed: int = 0, var_dir: Path | None = None, job_workers: int = 1, classes: int | None = None,
    escalated_share: float = 0.3,
) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="lookloop-cluster-") if var_dir is None else None
    var = Path(tmp.name) if tmp is not None else Path(var_dir or ".")
    var.mkdir(parents=True, exist_ok=True)
    pg: LocalPostgres | None = None
    if not database_url:
        pg_bin = postgres_bin()
        if pg_bin is None:
            raise BadInput(NOT_INSTALLED)
        pg = LocalPostgres.start(var, pg_bin, database="lookloop_bench")
        database_url = pg.url
    try:
        return _run(var, database_url, workers=workers, wearers=wearers, duration=duration, kill_one=kill_one,
                    think_s=think_s, seed=seed, job_workers=job_workers, classes=classes,
                    escalated_share=escalated_share)
    finally:
        if pg is not None:
            pg.stop()
        if tmp is not None:
            tmp.cleanup()


def _run(var: Path, database_url: str, *, workers: int, wearers: int, duration: float, kill_one: bool,
         think_s: float, seed: int, job_workers: int, classes: int | None,
         escalated_share: float) -> dict[str, Any]:
    base = get_settings()
    settings = Settings(var_dir=var, data_dir=base.data_dir, model_dir=base.model_cache_dir, database_url=database_url)
    console.print(f"preparing {wearers} wearers and the demo catalogue on {database_url.split('@')[-1]}")
    p = prepare(settings, wearers, classes, escalated_share)
    env = {
        **os.environ,
        "LOOKLOOP_VAR_DIR": str(var), "LOOKLOOP_DATABASE_URL": database_url,
        "LOOKLOOP_MODEL_DIR": str(base.model_cache_dir),
        "LOOKLOOP_RATE_LIMIT_DEVICE_PER_MIN": "0", "LOOKLOOP_RATE_LIMIT_ACCOUNT_PER_MIN": "0",
        "LOOKLOOP_RATE_LIMIT_ANONYMOUS_PER_MIN": "0", "LOOKLOOP_PURGE_INTERVAL_S": "0",
        # The N workers share this machine, as under `lookloop serve --workers N`.
        "LOOKLOOP_API_WORKERS_PER_MACHINE": str(workers),
    }
    figures: dict[str, Any] = {"workers": workers, "wearers": wearers, "duration_s": duration,
                               "job_workers": job_workers}
    # The live path, the latencies and the kill at the stated load (a pause of ``think_s`` on average), first, on
    # a quiet machine; then the capacity at saturation (wearers ask again as soon as they are answered), with 1
    # worker and with N in turns. The background jobs the saturated turns leave behind would otherwise still be
    # running while the latencies are measured.
    with make_progress() as bar:
        cap_s = max(10.0, duration)  # counted seconds at saturation for each worker count, over its turns

        def saturated() -> tuple[Capacity, Capacity]:
            """The capacity with 1 worker and with N, in turns on the same started workers (the spare ones stand
            idle in the one-worker turns), so what else the machine does meanwhile weighs on both alike."""
            group = Workers(env, workers, var, job_workers)
            turn_s = cap_s / CAPACITY_TURNS + min(5.0, cap_s / 4)  # each turn's settling seconds are not counted
            tasks = {n: bar.add_task(f"{n} worker{'s' if n > 1 else ''} at saturation (capacity)",
                                     total=cap_s) for n in dict.fromkeys((1, workers))}
            out = {n: Capacity() for n in tasks}
            group.start()
            try:
                for turn in range(CAPACITY_TURNS):
                    # 1, N, N, 1, …: a drift over the turns (the live waits and queues building up) weighs on both.
                    order = list(tasks.items()) if turn % 2 == 0 else list(reversed(tasks.items()))
                    for n, task in order:
                        group.serving = n
                        done = out[n].window

                        def tick(t: float, task_: Any = task, done_: float = done) -> None:
                            bar.update(task_, completed=min(cap_s, done_ + t * cap_s / CAPACITY_TURNS / turn_s))

                        ledger_, _, _, window_, busy_ = asyncio.run(_phase(
                            group, p, wearers=wearers, duration=turn_s, think_s=0.0, kill_at=None, probes=False,
                            seed=seed + 10 * turn + n, tick=tick))
                        out[n].add(ledger_, window_, busy_)
            finally:
                group.stop()
            return out[1], out[workers]

        many = Workers(env, workers, var, job_workers)
        task = bar.add_task(f"{workers} workers at {think_s:g} s pauses" + (", one killed mid-run" if kill_one else ""),
                            total=duration)
        many.start()
        try:
            ledger, dispatch, effect, window, busy = asyncio.run(_phase(
                many, p, wearers=wearers, duration=duration, think_s=think_s,
                kill_at=duration / 2 if kill_one else None, probes=True, seed=seed + 2,
                tick=lambda t: bar.update(task, completed=t)))
        finally:
            many.stop()
        one, many_cap = saturated()
    lost, duplicated = _verify(database_url, set(p.wearer_devices), [*one.ledgers, *many_cap.ledgers, ledger])
    lat = [ms for _, ms in ledger.latencies]
    rate, rate_1 = many_cap.rate, one.rate
    cap_busy, base_busy = many_cap.busy, one.busy
    load = len(lat) / window if window else 0.0
    figures.update({
        "asks_per_s": round(rate, 2),
        "identify_p50_ms": round(percentile(lat, 50), 1),
        "identify_p95_ms": round(percentile(lat, 95), 1),
        "errors": ledger.errors + sum(x.errors for x in (*one.ledgers, *many_cap.ledgers)),
        "dispatch_p95_ms": round(percentile(dispatch, 95), 1),
        "dispatch_p50_ms": round(percentile(dispatch, 50), 1),
        "dispatch_n": len(dispatch),
        "label_effect_p95_ms": round(percentile(effect, 95), 1),
        "label_effect_p50_ms": round(percentile(effect, 50), 1),
        "label_effect_n": len(effect),
        "label_post_p50_ms": round(percentile(ledger.label_posts, 50), 1),  # of which: worker A taking the label
        "label_post_p95_ms": round(percentile(ledger.label_posts, 95), 1),
        "lost": lost,
        "duplicated": duplicated,
        "killed": 1 if kill_one else 0,
        "probe_problems": len(ledger.probe_problems),
        "retries": ledger.retries,
        "asks_per_s_1_worker": round(rate_1, 2),
        "throughput_ratio_2v1": round(rate / rate_1, 3) if rate_1 else float("nan"),
        # The load the latencies, the live path and the kill were measured at, and its share of the capacity.
        "load_asks_per_s": round(load, 2),
        "load_share_of_capacity": round(load / rate, 3) if rate else float("nan"),
        # How busy the whole machine was (load generator, Postgres and job workers included) at saturation: a
        # ratio near 1 with the one-worker figure already near 1.0 means the machine, not the worker, was the limit.
        "cpu_busy_share": round(cap_busy, 3),
        "cpu_busy_share_1_worker": round(base_busy, 3),
        "cpu_busy_share_load": round(busy, 3),
        "cpu_cores": os.cpu_count() or 0,
        "think_s": think_s,
        "escalated_share": escalated_share,
    })
    if ledger.probe_problems:
        console.print(f"[yellow]{len(ledger.probe_problems)} probe problems, e.g.:[/yellow] "
                      + " | ".join(sorted(set(ledger.probe_problems))[:6]))
    if ledger.error_samples:
        console.print("[yellow]errors, e.g.:[/yellow] " + " | ".join(ledger.error_samples))
    return figures


def register(app: typer.Typer) -> None:
    @app.command("cluster")
    def cluster(
        workers: Annotated[int, typer.Option(min=1, max=16, help="API worker processes.")] = 2,
        wearers: Annotated[int, typer.Option(min=1, max=2000, help="Simulated wearers (closed loops).")] = 200,
        duration: Annotated[float, typer.Option(min=5.0, help="Seconds of load with all workers.")] = 60.0,
        job_workers: Annotated[int, typer.Option(min=0, max=8, help="Job worker processes.")] = 1,
        classes: Annotated[int | None, typer.Option(min=2, help="Only this many products (default: the whole "
                                                    "demo catalogue).")] = None,
        kill_one: Annotated[bool, typer.Option("--kill-one", help="SIGKILL one API worker half-way.")] = False,
        think: Annotated[float, typer.Option(min=0.0, help="Mean seconds a wearer waits between asks while the "
                                             "latencies and the live path are measured (capacity is measured "
                                             "with no pause).")] = 30.0,
        database_url: Annotated[str, typer.Option(help="Postgres to use (default: a local one in a temp dir).")] = "",
        escalated_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of wearers whose unsure "
                                                       "answers go to a person (the rest turned human review "
                                                       "off).")] = 0.3,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    ) -> None:
        """Wearers, a reviewer and label probes against N API workers on one Postgres."""

        try:
            figures = run_cluster_bench(workers=workers, wearers=wearers, duration=duration, kill_one=kill_one,
                                        database_url=database_url, think_s=think, seed=seed,
                                        job_workers=job_workers, classes=classes,
                                        escalated_share=escalated_share)
        except LookloopError as exc:
            raise fail(exc.message) from None
        print_figures("cluster", figures)
        write_json(json_path, figures)
