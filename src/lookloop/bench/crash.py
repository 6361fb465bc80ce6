"""``lookloop bench crash``: SIGKILL the server while wearers and reviewers write; count lost and doubled writes.

The server runs as a child process (uvicorn, loopback, a temporary var dir). Simulated wearers send asks
with an ``Idempotency-Key``; reviewers label acknowledged asks (also keyed), and wearers confirm some of their
own answers (labels with source ``wearer``). Every client keeps its unacknowledged writes in an offline
queue and resends them with the same key until acknowledged. After the kills and the final drain, every
acknowledged write is looked up in the database: ``lost`` counts acknowledged writes missing from it,
``duplicated`` counts writes stored more than once.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import Progress
from sqlalchemy import func, select

from lookloop.bench._common import ServerProcess, console, print_figures, write_json
from lookloop.catalog import GroceryDataset, grocery_catalog
from lookloop.config import Settings, get_settings
from lookloop.humans.accounts import Accounts
from lookloop.store.db import Database
from lookloop.store.localpg import free_port
from lookloop.store.tables import AskRow, IdempotencyRow, LabelRow
from lookloop.system import Lookloop


@dataclass
class Write:
    kind: str  # "ask" | "label"
    key: str
    ask_id: str = ""  # the label's target
    value: str = ""
    source: str = "human"
    image: bytes = b""


@dataclass
class Client:
    """A device or reviewer with an offline queue of unacknowledged writes."""

    name: str
    token: str
    pending: deque[Write] = field(default_factory=deque)
    acked: dict[str, str] = field(default_factory=dict)  # key -> ask id


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    asks: dict[str, str] = field(default_factory=dict)  # ask key -> ask id
    labels: dict[str, str] = field(default_factory=dict)  # label key -> ask id
    to_label: deque[tuple[str, str]] = field(default_factory=deque)  # (ask id, owner token)
    errors: int = 0


def _prepare(
    var: Path, n_wearers: int, n_reviewers: int, n_classes: int
) -> tuple[list[Client], list[Client], list[bytes]]:
    """A small catalogue, device tokens and reviewer sessions, made in process before the server starts."""

    base = get_settings()
    settings = Settings(var_dir=var, data_dir=base.data_dir, model_dir=base.model_cache_dir)
    system = Lookloop(settings)
    system.migrate()
    ds = GroceryDataset(settings.grocery_dir)
    items = grocery_catalog(settings.grocery_dir)[:n_classes]
    names = {i.name for i in items}
    system.upsert_items(items)
    train = [i for i in ds.split("train") if i.label in names]
    system.import_labelled_images(train[: 4 * n_classes], source="import")
    images = [i.path.read_bytes() for i in ds.split("val") if i.label in names][:24]
    accounts = Accounts(system.db)
    wearers = []
    for w in range(n_wearers):
        _, token = accounts.add_device(f"crash-wearer-{w}")
        wearers.append(Client(f"wearer-{w}", token))
    reviewers = []
    for r in range(n_reviewers):
        # They label any acknowledged ask through the labels API: a reviewer may only label the asks whose
        # review item they hold, so these accounts are operators.
        accounts.add_account(f"crash-reviewer-{r}", "operator", "crash-password-1")
        token, _ = accounts.login(f"crash-reviewer-{r}", "crash-password-1")
        reviewers.append(Client(f"reviewer-{r}", token))
    system.db.dispose()
    return wearers, reviewers, images


def _send(http: Any, base: str, client: Client, w: Write) -> str | None:
    """The ask id when the server acknowledged the write; None to keep it queued."""

    headers = {"Authorization": f"Bearer {client.token}", "Idempotency-Key": w.key}
    try:
        if w.kind == "ask":
            r = http.post(base + "/v1/asks", data={"question": "what is this?", "skill": "identify"},
                          files={"image": ("f.jpg", w.image, "image/jpeg")}, headers=headers)
        else:
            r = http.post(base + f"/v1/asks/{w.ask_id}/labels", json={"value": w.value, "source": w.source},
                          headers=headers)
    except httpx.HTTPError:
        return None
    if r.status_code == 200:
        return str(r.json()["id"])
    if r.status_code in (429,) or r.status_code >= 500:
        return None
    raise RuntimeError(f"{w.kind} {w.key}: the server answered {r.status_code}: {r.text[:200]}")


def _run_client(client: Client, base: str, ledger: Ledger, images: list[bytes], stop_new: threading.Event,
                done: threading.Event, is_reviewer: bool, seed: int) -> None:

    rng = random.Random(seed)
    n = 0
    with httpx.Client(timeout=15.0) as http:
        while not done.is_set():
            if not client.pending and not stop_new.is_set():
                n += 1
                if is_reviewer:
                    with ledger.lock:
                        target = ledger.to_label.popleft() if ledger.to_label else None
                    if target is None:
                        time.sleep(0.05)
                        continue
                    client.pending.append(Write("label", f"{client.name}:label:{target[0]}", ask_id=target[0],
                                                value="Granny-Smith", source="human"))
                else:
                    mine = [a for k, a in client.acked.items() if k.startswith(f"{client.name}:ask:")]
                    if mine and rng.random() < 0.25:
                        ask_id = mine[rng.randrange(len(mine))]
                        key = f"{client.name}:label:{ask_id}"
                        if key not in client.acked:
                            client.pending.append(Write("label", key, ask_id=ask_id, value="Banana",
                                                        source="wearer"))
                    if not client.pending:
                        client.pending.append(Write("ask", f"{client.name}:ask:{n}",
                                                    image=images[rng.randrange(len(images))]))
            if not client.pending:
                if stop_new.is_set():
                    return
                continue
            w = client.pending[0]
            acked_id = _send(http, base, client, w)
            if acked_id is None:
                time.sleep(0.2)  # offline: the queue keeps it and resends with the same key
                continue
            client.pending.popleft()
            client.acked[w.key] = acked_id
            with ledger.lock:
                if w.kind == "ask":
                    ledger.asks[w.key] = acked_id
                    if rng.random() < 0.5:
                        ledger.to_label.append((acked_id, client.token))
                else:
                    ledger.labels[w.key] = w.ask_id


def _verify(db_url: str, ledger: Ledger) -> dict[str, int]:
    db = Database(db_url)
    try:
        with db.session() as s:
            # Each acknowledged ask's key has one receipt (per wearer) naming the one ask it produced.
            by_key = dict(s.execute(select(IdempotencyRow.key, IdempotencyRow.result_id)
                                    .where(IdempotencyRow.kind == "ask")).all())
            by_ask = dict(s.execute(select(LabelRow.ask_id, func.count()).where(LabelRow.ask_id.is_not(None))
                                    .group_by(LabelRow.ask_id)).all())
            ids = set(s.scalars(select(AskRow.id)))
    finally:
        db.dispose()
    lost_asks = sum(1 for k, a in ledger.asks.items() if by_key.get(k) != a or a not in ids)
    # Every ask of the benchmark was sent with a key: an ask no receipt names was stored twice for one key.
    dup_asks = len(ids - set(by_key.values()))
    label_targets: dict[str, int] = {}
    for ask_id in ledger.labels.values():
        label_targets[ask_id] = label_targets.get(ask_id, 0) + 1
    lost_labels = sum(1 for a, want in label_targets.items() if by_ask.get(a, 0) < want)
    dup_labels = sum(max(0, by_ask.get(a, 0) - want) for a, want in label_targets.items())
    return {"lost_asks": lost_asks, "lost_labels": lost_labels, "duplicated_asks": dup_asks,
            "duplicated_labels": dup_labels}


def run_crash(
    *, wearers: int = 3, reviewers: int = 1, kills: int = 3, interval_s: float = 4.0, drain_s: float = 60.0,
    classes: int = 4, var_dir: Path | None = None, seed: int = 0, progress: Any = None,
) -> dict[str, Any]:
    """Runs the whole benchmark and returns its figures (the CLI prints and writes them)."""
    tmp = tempfile.TemporaryDirectory(prefix="lookloop-crash-") if var_dir is None else None
    var = Path(tmp.name) if tmp is not None else Path(var_dir or ".")
    try:
        var.mkdir(parents=True, exist_ok=True)
        wearer_clients, reviewer_clients, images = _prepare(var, wearers, reviewers, classes)
        env = {
            **os.environ,
            "LOOKLOOP_VAR_DIR": str(var),
            "LOOKLOOP_MODEL_DIR": str(_model_dir()),  # the ONNX export and embeddings are made once
            "LOOKLOOP_RATE_LIMIT_DEVICE_PER_MIN": "0",
            "LOOKLOOP_RATE_LIMIT_ACCOUNT_PER_MIN": "0",
            "LOOKLOOP_RATE_LIMIT_ANONYMOUS_PER_MIN": "0",
            "LOOKLOOP_PURGE_INTERVAL_S": "0",
            "LOOKLOOP_DATABASE_URL": "",
        }
        server = ServerProcess(env, free_port(), var / "server.log")
        restart_s = [server.start()]
        ledger = Ledger()
        stop_new, done = threading.Event(), threading.Event()
        threads = [
            threading.Thread(target=_run_client, args=(c, server.base, ledger, images, stop_new, done, False, seed + i),
                             daemon=True)
            for i, c in enumerate(wearer_clients)
        ] + [
            threading.Thread(target=_run_client, args=(c, server.base, ledger, images, stop_new, done, True,
                                                       seed + 100 + i), daemon=True)
            for i, c in enumerate(reviewer_clients)
        ]
        for t in threads:
            t.start()
        rng = random.Random(seed)
        for k in range(kills):
            time.sleep(interval_s * (0.5 + rng.random()))
            server.kill()
            if progress:
                progress(k + 1, kills)
            time.sleep(0.3)
            restart_s.append(server.start())
        time.sleep(interval_s)
        stop_new.set()
        deadline = time.monotonic() + drain_s
        for t in threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        done.set()
        unacked = sum(len(c.pending) for c in wearer_clients + reviewer_clients)
        server.stop()
        checks = _verify(f"sqlite:///{var / 'lookloop.db'}", ledger)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {
        "acknowledged": len(ledger.asks) + len(ledger.labels),
        "lost": checks["lost_asks"] + checks["lost_labels"],
        "duplicated": checks["duplicated_asks"] + checks["duplicated_labels"],
        "kills": kills,
        "acknowledged_asks": len(ledger.asks),
        "acknowledged_labels": len(ledger.labels),
        "lost_asks": checks["lost_asks"],
        "lost_labels": checks["lost_labels"],
        "duplicated_asks": checks["duplicated_asks"],
        "duplicated_labels": checks["duplicated_labels"],
        "unacknowledged_at_end": unacked,
        "wearers": wearers,
        "reviewers": reviewers,
        "restart_s_mean": round(sum(restart_s[1:]) / max(1, len(restart_s) - 1), 2),
    }


def _model_dir() -> Path:
    return get_settings().model_cache_dir


def register(app: typer.Typer) -> None:
    @app.command("crash")
    def crash(
        wearers: Annotated[int, typer.Option(min=1, max=50, help="Simulated wearers (devices).")] = 3,
        reviewers: Annotated[int, typer.Option(min=0, max=20, help="Simulated reviewers.")] = 1,
        kills: Annotated[int, typer.Option(min=1, max=50, help="SIGKILLs of the server.")] = 3,
        interval: Annotated[float, typer.Option(min=0.5, help="Mean seconds between kills.")] = 4.0,
        drain: Annotated[float, typer.Option(min=1.0, help="Seconds the offline queues get to resend.")] = 60.0,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    ) -> None:
        """Kill the server mid-write, restart it, resend, and check every acknowledged write."""

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("killing the server", total=kills)
            figures = run_crash(wearers=wearers, reviewers=reviewers, kills=kills, interval_s=interval,
                                drain_s=drain, seed=seed,
                                progress=lambda done, total: bar.update(task, completed=done))
        print_figures("crash durability", figures)
        write_json(json_path, figures)
        if figures["lost"] or figures["duplicated"]:
            raise typer.Exit(1)
