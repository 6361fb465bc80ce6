"""``lookloop bench roundtrip``: the live human path, wearer → reviewer → wearer, against a real server.

N simulated wearers (a WebSocket stream each, asks over HTTP) and one scripted reviewer client (a socket that
answers every pushed item at once). The server runs in a subprocess on 127.0.0.1 so the clients do not share
its interpreter. Every ask escalates (the server runs with an always-escalate policy) so each one makes the trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
import uvicorn
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from websockets.asyncio.client import connect

from lookloop.bench._common import console, percentile, print_figures, write_json
from lookloop.catalog import grocery_catalog
from lookloop.config import Settings, get_settings
from lookloop.domain import Decision, PolicyDecision
from lookloop.server.app import create_app
from lookloop.store.localpg import free_port
from lookloop.system import Lookloop

BENCH_CLASSES = ("Granny-Smith", "Banana", "Arla-Standard-Milk", "Red-Bell-Pepper", "Cucumber")


class AlwaysEscalate:
    """Bench-only policy: every ask goes to a human, so every ask makes the round trip."""

    name = "bench-always-escalate"

    def decide(self, probs: np.ndarray, group: str | None = None) -> Any:
        top = float(np.max(probs)) if probs.size else 0.0
        return PolicyDecision(Decision.ESCALATE, top, 1.01, self.name)

    def calibrate(self, scores: np.ndarray, correct: np.ndarray, groups: Sequence[str] | None = None) -> None:
        return None


def _settings(var_dir: Path) -> Any:
    base = get_settings()
    return Settings(var_dir=var_dir, data_dir=base.data_dir, model_dir=base.model_cache_dir,
                    live_answer_timeout_s=600, review_gold_every=0)


def prepare(var_dir: Path, wearers: int) -> dict[str, Any]:
    """A small catalogue, N devices and a reviewer in a fresh database; returns their credentials."""

    system = Lookloop(_settings(var_dir))
    system.migrate()
    root = system.settings.grocery_dir
    if not (root / "classes.csv").is_file():
        raise typer.BadParameter(f"no Grocery Store data at {root} (set LOOKLOOP_DATA_DIR)")
    system.upsert_items([i for i in grocery_catalog(root) if i.name in BENCH_CLASSES])
    accounts = system.humans.accounts
    devices = [accounts.add_device(f"wearer-{i}", "bench glasses")[1] for i in range(wearers)]
    accounts.add_account("bench-reviewer", "reviewer", "bench-reviewer-pw")
    system.db.dispose()
    return {"devices": devices, "reviewer": ("bench-reviewer", "bench-reviewer-pw")}


def serve(var_dir: Path, port: int) -> None:
    """The server process: the bench system behind uvicorn, every ask escalated."""


    system = Lookloop(_settings(var_dir))
    system.policy = AlwaysEscalate()
    system.humans.max_pushed_locks = 10_000  # the scripted reviewer has as many hands as it needs
    uvicorn.run(create_app(system=system, warm=True), host="127.0.0.1", port=port, log_level="warning")


@dataclass
class Trip:
    sent: float = 0.0
    to_reviewer: float | None = None
    dispatch_ms: float | None = None
    answer_sent: float | None = None
    to_wearer: float | None = None


@dataclass
class Run:
    trips: dict[str, Trip] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    answered: int = 0


async def _drive(base: str, creds: dict[str, Any], photos: list[Path], asks_per_wearer: int, period_s: float,
                 deadline_s: float, progress: Any) -> Run:

    run = Run()
    ws_base = base.replace("http://", "ws://")
    pending_by_ask: dict[str, Trip] = {}
    # Reviewers see no ask ids: each ask's question carries a tag, and the item on the reviewer's socket is
    # matched to its trip by the question.
    pending_by_question: dict[str, Trip] = {}
    early_items: dict[str, float] = {}  # items that beat the HTTP response home (by question)
    early_answers: dict[str, float] = {}
    dispatch: dict[str, float] = {}  # queue item created on the server → on the reviewer's socket
    total = len(creds["devices"]) * asks_per_wearer
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        r = await http.post("/v1/auth/login", json=dict(zip(("username", "password"), creds["reviewer"], strict=True)))
        r.raise_for_status()
        reviewer_token = r.json()["token"]
        rh = {"Authorization": f"Bearer {reviewer_token}"}

        async def reviewer() -> None:
            async with connect(f"{ws_base}/v1/review/stream?token={reviewer_token}", max_queue=None) as ws:
                async for raw in ws:
                    now, wall = time.perf_counter(), time.time()
                    ev = json.loads(raw)
                    if ev.get("type") != "item":
                        continue
                    item = ev["item"]
                    key = str(item["question"])
                    dispatch[key] = (wall - float(item["escalated_at"])) * 1000
                    trip = pending_by_question.get(key)
                    if trip is None:
                        early_items[key] = now
                    else:
                        trip.to_reviewer = now
                    label = item["candidates"][0]["label"] if item["candidates"] else "Banana"
                    sent = time.perf_counter()
                    if trip is not None:
                        trip.answer_sent = sent
                    else:
                        early_items[key + ":answer"] = sent
                    asyncio.create_task(answer(item["id"], label))

        async def answer(item_id: str, label: str) -> None:
            resp = await http.post(f"/v1/review/items/{item_id}/answer", json={"action": "answer", "value": label},
                                   headers=rh)
            if resp.status_code != 200:
                run.errors.append(f"answer {resp.status_code}: {resp.text[:120]}")

        async def wearer(token: str, index: int) -> None:
            rng = random.Random(index)
            headers = {"Authorization": f"Bearer {token}"}
            async with connect(f"{ws_base}/v1/devices/stream?token={token}", max_queue=None) as ws:
                await ws.recv()  # hello

                async def listen() -> None:
                    async for raw in ws:
                        now = time.perf_counter()
                        ev = json.loads(raw)
                        if ev.get("type") != "answer":
                            continue
                        trip = pending_by_ask.get(ev["ask_id"])
                        if trip is None:
                            early_answers[ev["ask_id"]] = now
                        else:
                            trip.to_wearer = now
                        run.answered += 1
                        progress(run.answered, total)
                        if run.answered >= total:
                            done.set()

                listener = asyncio.create_task(listen())
                await asyncio.sleep(rng.uniform(0, period_s))
                for k in range(asks_per_wearer):
                    photo = photos[(index * asks_per_wearer + k) % len(photos)]
                    question = f"what is this? #{index}-{k}"
                    trip = Trip(sent=time.perf_counter())
                    resp = await http.post("/v1/asks", data={"question": question, "skill": "identify"},
                                           files={"image": (photo.name, photo.read_bytes())}, headers=headers)
                    if resp.status_code != 200:
                        run.errors.append(f"ask {resp.status_code}: {resp.text[:120]}")
                        continue
                    ask_id = resp.json()["id"]
                    run.trips[ask_id] = trip
                    pending_by_ask[ask_id] = trip
                    pending_by_question[question] = trip
                    if question in early_items:
                        trip.to_reviewer = early_items.pop(question)
                        trip.answer_sent = early_items.pop(question + ":answer", None)
                    if ask_id in early_answers:
                        trip.to_wearer = early_answers.pop(ask_id)
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * period_s)
                try:
                    await asyncio.wait_for(done.wait(), deadline_s)
                except TimeoutError:
                    pass
                listener.cancel()

        rev = asyncio.create_task(reviewer())
        await asyncio.sleep(0.3)
        await asyncio.wait_for(asyncio.gather(*(wearer(t, i) for i, t in enumerate(creds["devices"]))),
                               deadline_s + period_s * (asks_per_wearer + 2))
        rev.cancel()
    for question, ms in dispatch.items():
        if question in pending_by_question:
            pending_by_question[question].dispatch_ms = ms
    return run


def roundtrip(wearers: int, asks_per_wearer: int, period_s: float, deadline_s: float) -> dict[str, Any]:
    root = get_settings().grocery_dir
    val = sorted((root / "val").rglob("*.jpg"))
    if not val:
        raise typer.BadParameter(f"no photos under {root / 'val'} (set LOOKLOOP_DATA_DIR)")
    photos = val[:: max(1, len(val) // max(1, wearers * asks_per_wearer))]
    with tempfile.TemporaryDirectory(prefix="lookloop-roundtrip-") as tmp:
        var_dir = Path(tmp) / "var"
        creds = prepare(var_dir, wearers)
        port = free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "lookloop.bench.roundtrip", str(var_dir), str(port)], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, proc)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("round trips", total=wearers * asks_per_wearer)
                run = asyncio.run(_drive(base, creds, photos, asks_per_wearer, period_s, deadline_s,
                                         lambda n, total: bar.update(task, completed=n)))
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    to_rev = [(t.to_reviewer - t.sent) * 1000 for t in run.trips.values() if t.to_reviewer is not None]
    to_wear = [(t.to_wearer - t.answer_sent) * 1000 for t in run.trips.values()
               if t.to_wearer is not None and t.answer_sent is not None]
    disp = [t.dispatch_ms for t in run.trips.values() if t.dispatch_ms is not None]
    return {
        "wearers": wearers,
        "asks": len(run.trips),
        "completed": len(to_wear),
        "to_reviewer_p50_ms": round(percentile(to_rev, 50), 2),
        "to_reviewer_p95_ms": round(percentile(to_rev, 95), 2),
        "to_wearer_p50_ms": round(percentile(to_wear, 50), 2),
        "to_wearer_p95_ms": round(percentile(to_wear, 95), 2),
        "escalated_to_reviewer_p50_ms": round(percentile(disp, 50), 2),
        "escalated_to_reviewer_p95_ms": round(percentile(disp, 95), 2),
        "ask_rate_per_s": round(wearers / period_s, 2),
        "errors": len(run.errors),
    }


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the benchmark server exited during start-up")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the benchmark server did not start within 180 s")


def register(app: typer.Typer) -> None:
    @app.command("roundtrip")
    def roundtrip_cmd(
        wearers: Annotated[int, typer.Option(min=1, max=500, help="Simulated wearers.")] = 50,
        asks: Annotated[int, typer.Option(min=1, max=100, help="Asks per wearer.")] = 2,
        period: Annotated[float, typer.Option(min=0.1, max=300, help="Mean seconds between a wearer's asks.")] = 20.0,
        deadline: Annotated[float, typer.Option(min=5, max=900, help="Give up waiting for answers after this.")] = 60.0,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    ) -> None:
        """Live path latency: ask → reviewer's socket, reviewer's answer → wearer's stream (p50/p95)."""
        figures = roundtrip(wearers, asks, period, deadline)
        print_figures(f"human round trip · {wearers} wearers", figures)
        write_json(json_path, figures)
        if figures["completed"] == 0:
            raise typer.Exit(1)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
