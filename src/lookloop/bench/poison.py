"""``lookloop bench poison``: can wrong labels from one wearer change what everyone else is told?

An in-process system (a temporary var dir, the grocery catalogue and its train labels) behind the HTTP API. For
each of N real photos (the eval split): other wearers ask about it and about a near-duplicate of it (cropped and
re-encoded), then an attacker with a device token asks and labels it wrong (a catalogue item it is not: half
through the labels API, half as feedback with a correction), and an attacker without a token tries both too. The
attacker asks again; the other wearers ask again. Then an honest, trusted reviewer works the review queue (the
attacker's corrections wait there for a second opinion) and the others ask once more.

Figures: ``flipped_for_others`` (answers to other wearers that changed to the attacker's label, before and after
the review), ``flipped_for_attacker`` (the attacker's own answers that did), ``refused_anonymous`` (label attempts
without a token that were refused), ``labels`` (wrong labels the attacker sent with a token).
"""

from __future__ import annotations

import io
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi.testclient import TestClient
from PIL import Image

from lookloop.bench._common import console, fail, make_progress, print_figures, write_json
from lookloop.catalog import GroceryDataset, LabelledImage, grocery_catalog
from lookloop.config import Settings, get_settings
from lookloop.humans.accounts import Principal
from lookloop.server.app import create_app
from lookloop.system import Lookloop

GOLD_ANSWERS = 5  # the honest reviewer's gold record: enough to be trusted under the default settings
OTHER_WEARERS = 3


def near_duplicate(data: bytes) -> bytes:
    """The same thing seen again: a 6% crop off each side, resized back, re-encoded."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        dx, dy = int(w * 0.06), int(h * 0.06)
        out = io.BytesIO()
        rgb.crop((dx, dy, w - dx, h - dy)).resize((w, h)).save(out, format="JPEG", quality=88)
        return out.getvalue()


def _system(var: Path, n_classes: int) -> tuple[Lookloop, GroceryDataset, set[str]]:
    base = get_settings()
    settings = Settings(var_dir=var, data_dir=base.data_dir, model_dir=base.model_cache_dir, audit_rate=0.0,
                        rate_limit_device_per_min=0, rate_limit_account_per_min=0, rate_limit_anonymous_per_min=0)
    system = Lookloop(settings)
    system.migrate()
    ds = GroceryDataset(settings.grocery_dir)
    items = grocery_catalog(settings.grocery_dir)
    if n_classes:
        items = items[:n_classes]
    names = {i.name for i in items}
    system.upsert_items(items)
    system.import_labelled_images([i for i in ds.split("train") if i.label in names], source="import")
    system.build_identify()
    return system, ds, names


def _photos(ds: GroceryDataset, split: str, names: set[str], n: int, seed: int) -> list[LabelledImage]:
    """N photos of the eval split, spread over the classes (a seeded draw)."""
    rng = random.Random(seed)
    by_class: dict[str, list[LabelledImage]] = {}
    for p in ds.split(split):
        if p.label in names:
            by_class.setdefault(p.label, []).append(p)
    classes = sorted(by_class)
    rng.shuffle(classes)
    out: list[LabelledImage] = []
    while len(out) < n and any(by_class.values()):
        for c in classes:
            if by_class[c] and len(out) < n:
                out.append(by_class[c].pop(rng.randrange(len(by_class[c]))))
    return out


@dataclass
class _Target:
    photo: LabelledImage
    data: bytes
    dup: bytes
    wrong: str
    ask_id: str = ""
    before: dict[tuple[int, int], str] | None = None  # (wearer, 0 photo / 1 near-duplicate) → label


def run_poison(n_labels: int, *, n_classes: int = 0, split: str = "val", seed: int = 0,
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Runs the attack and the review; returns the figures."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lookloop-poison-") as tmp:
        system, ds, names = _system(Path(tmp) / "var", n_classes)
        try:
            figures = _attack(system, ds, names, n_labels, split, seed, progress, t0)
            return {**figures, "split": split, "seed": seed}
        finally:
            system.db.dispose()


def _attack(system: Lookloop, ds: GroceryDataset, names: set[str], n_labels: int, split: str, seed: int,
            progress: Callable[[str, int, int], None] | None, t0: float) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    accounts = system.humans.accounts
    _, attacker = accounts.add_device("poison-attacker", "attacker's glasses")
    others = [accounts.add_device(f"poison-wearer-{i}", "glasses")[1] for i in range(OTHER_WEARERS)]
    info, _ = accounts.add_account("poison-reviewer", "reviewer")
    reviewer = Principal("account", "reviewer", account_id=info.id, name="poison-reviewer")
    queue = system.humans.queue
    for i in range(GOLD_ANSWERS):
        gold = queue.add_gold(question=f"gold {i}", frame_sha=None, answer="Banana")
        queue.submit(gold.id, reviewer, "answer", "Banana")

    photos = _photos(ds, split, names, n_labels, seed)
    classes = sorted(names)
    with TestClient(create_app(system=system, warm=False)) as client:
        return _run(system, client, queue, reviewer, attacker, others, photos, classes, rng, progress, t0,
                    len(names))


def _run(system: Lookloop, client: TestClient, queue: Any, reviewer: Principal, attacker: str, others: list[str],
         photos: list[LabelledImage], classes: list[str], rng: random.Random,
         progress: Callable[[str, int, int], None] | None, t0: float, n_classes: int) -> dict[str, Any]:
    counts = {"refused_anonymous": 0, "anonymous_attempts": 0, "accepted_anonymous": 0, "labels": 0,
              "labels_refused": 0, "flipped_for_attacker": 0, "flipped_for_others_before_review": 0,
              "flipped_for_others_after_review": 0, "other_answers": 0, "reviewed": 0}

    truth: dict[str, str] = {}  # ask id → what the photo shows (the honest reviewer's answer)
    shows: dict[bytes, str] = {}

    def ask(data: bytes, token: str | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = client.post("/v1/asks", data={"question": "what is this?"}, headers=headers,
                        files={"image": ("frame.jpg", data, "image/jpeg")})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        truth[body["id"]] = shows[data]
        return body

    def label_of(body: dict[str, Any]) -> str:
        return str(body["answer"]["result"].get("label") or "")

    targets: list[_Target] = []
    for p in photos:
        data = p.path.read_bytes()
        wrong = rng.choice([c for c in classes if c != p.label])
        targets.append(_Target(p, data, near_duplicate(data), wrong))
        shows[targets[-1].data] = shows[targets[-1].dup] = p.label

    total = len(targets)
    for i, t in enumerate(targets):
        t.before = {(w, k): label_of(ask(data, tok)) for w, tok in enumerate(others)
                    for k, data in enumerate((t.data, t.dup))}
        # The attacker with a token: a wrong label through the labels API or as feedback with a correction.
        mine = ask(t.data, attacker)
        t.ask_id = mine["id"]
        auth = {"Authorization": f"Bearer {attacker}"}
        if i % 2 == 0:
            r = client.post(f"/v1/asks/{t.ask_id}/labels", json={"value": t.wrong}, headers=auth)
        else:
            r = client.post(f"/v1/asks/{t.ask_id}/feedback", json={"verdict": "wrong", "correction": t.wrong},
                            headers=auth)
        counts["labels" if r.status_code < 300 else "labels_refused"] += 1
        # The attacker without a token: the labels API and feedback on an anonymous ask.
        anon = ask(t.data, None)
        for path, body in ((f"/v1/asks/{anon['id']}/labels", {"value": t.wrong}),
                           (f"/v1/asks/{anon['id']}/feedback", {"verdict": "wrong", "correction": t.wrong})):
            r = client.post(path, json=body)
            counts["anonymous_attempts"] += 1
            counts["refused_anonymous" if r.status_code in (401, 403) else "accepted_anonymous"] += 1
        if label_of(ask(t.data, attacker)) == t.wrong != label_of(mine):
            counts["flipped_for_attacker"] += 1
        if progress:
            progress("poisoning", i + 1, total)

    def count_flips(key: str) -> None:
        for i, t in enumerate(targets):
            now = {(w, k): label_of(ask(data, tok)) for w, tok in enumerate(others)
                   for k, data in enumerate((t.data, t.dup))}
            assert t.before is not None
            for k, label in now.items():
                counts["other_answers"] += 1
                if label == t.wrong and t.before[k] != t.wrong:
                    counts[key] += 1
            if progress:
                progress(f"other wearers ask ({key.rsplit('_', 2)[-2]} review)", i + 1, total)

    count_flips("flipped_for_others_before_review")
    # An honest, trusted reviewer works the queue (the escalations, and the second opinions the attacker's
    # corrections wait for), answering what each photo shows.
    seen: set[str] = set()
    while (item := queue.next(reviewer)) is not None and item.id not in seen:
        seen.add(item.id)
        value = truth.get(item.ask_id or "")
        if value is None:
            queue.skip(item.id, reviewer)
            continue
        queue.submit(item.id, reviewer, "answer", value)
        counts["reviewed"] += 1
    count_flips("flipped_for_others_after_review")

    statuses = system.labels.counts()
    flipped = counts["flipped_for_others_before_review"] + counts["flipped_for_others_after_review"]
    return {
        "flipped_for_others": flipped,
        "flipped_for_attacker": counts["flipped_for_attacker"],
        "refused_anonymous": counts["refused_anonymous"],
        "labels": counts["labels"],
        "photos": total,
        "near_duplicates": total,
        "other_wearers": OTHER_WEARERS,
        "other_answers": counts["other_answers"],
        "flipped_for_others_before_review": counts["flipped_for_others_before_review"],
        "flipped_for_others_after_review": counts["flipped_for_others_after_review"],
        "flipped_for_attacker_rate": round(counts["flipped_for_attacker"] / total, 4) if total else 0.0,
        "labels_refused": counts["labels_refused"],
        "anonymous_attempts": counts["anonymous_attempts"],
        "accepted_anonymous": counts["accepted_anonymous"],
        "reviewed": counts["reviewed"],
        "labels_personal": statuses.get("personal", 0),
        "labels_rejected": statuses.get("rejected", 0),
        "classes": n_classes,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def register(app: typer.Typer) -> None:
    @app.command("poison")
    def poison(
        labels: Annotated[int, typer.Option("--labels", min=1, max=1000, help="Wrong labels the attacker sends.")] = 20,
        classes: Annotated[int, typer.Option(min=0, help="Catalogue classes (0: all of the data set).")] = 0,
        split: Annotated[str, typer.Option(help="The photos asked about (a split file of the data set).")] = "val",
        seed: Annotated[int, typer.Option(help="Random seed (photos and wrong labels).")] = 0,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the figures here.")] = None,
    ) -> None:
        """Wrong labels from a wearer with a token (and one without): do other wearers' answers change?"""
        if classes == 1:
            raise fail("--classes needs at least 2 (or 0 for all)")
        with make_progress() as bar:
            tasks: dict[str, Any] = {}

            def tick(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=total)
                bar.update(tasks[what], completed=done)

            figures = run_poison(labels, n_classes=classes, split=split, seed=seed, progress=tick)
        print_figures(f"label poisoning · {figures['labels']} wrong labels", figures)
        write_json(json_path, figures)
        if figures["flipped_for_others"]:
            console.print("[red]other wearers' answers changed to the attacker's labels[/red]")
