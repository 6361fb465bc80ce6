"""The operator dashboard in real headless Chromium: sign-in, every chart drawn from real API data.

Set LOOKLOOP_DOCS_SCREENSHOTS=1 to also write the screenshot to docs/dashboard.png.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, SMALL_CLASSES, make_settings, small_val
from episode_fixtures import seed_history

from lookloop.catalog import grocery_catalog
from lookloop.service import Lookloop

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "dashboard-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reviewer_history(system: Lookloop, seeded: Any) -> None:
    """Queue answers for the seeded escalations, as the review queue records them."""
    from lookloop.humans.runtime import humans_of
    from lookloop.humans.tables import ReviewAnswerRow, ReviewItemRow

    accounts = humans_of(system).accounts
    ids = {name: accounts.add_account(name, "reviewer", password=PASSWORD)[0].id for name in ("ana", "bo", "chen")}
    rng = random.Random(3)
    pace = {"ana": 2.5, "bo": 4.0, "chen": 6.5}
    with system.db.session() as s:
        for a in seeded.asks:
            if a["decision"] != "escalate":
                continue
            item = ReviewItemRow(ask_id=a["id"], question="what is this?", ai_label=a["guess"], status="resolved",
                                 resolved_value=a["truth"], created_at=a["created_at"])
            s.add(item)
            s.flush()
            for name in rng.sample(sorted(ids), 2):
                s.add(ReviewAnswerRow(item_id=item.id, account_id=ids[name], action="answer", value=a["truth"],
                                      duration_ms=1000 * rng.uniform(0.6, 1.4) * pace[name],
                                      agreed=rng.random() < 0.93, created_at=a["created_at"]))
        for name in ids:
            gold = ReviewItemRow(kind="gold", question="what is this?", status="gold", gold_answer="Banana")
            s.add(gold)
            s.flush()
            for _ in range(5):
                s.add(ReviewAnswerRow(item_id=gold.id, account_id=ids[name], action="answer", value="Banana",
                                      gold=True, correct=rng.random() < 0.9, duration_ms=2500))


def _model_history(system: Lookloop, tmp_path: Path) -> None:
    """Three registered versions, the newest promoted, as the learning loop's registry records them."""
    from lookloop.loop.tables import ModelEventRow, ModelVersionRow

    now = dt.datetime.now(dt.UTC)
    with system.db.session() as s:
        for i, acc in enumerate((0.71, 0.78, 0.84)):
            s.add(ModelVersionRow(id=f"lite0-head-{i + 1:04d}", artifact_dir=str(tmp_path / f"v{i}"),
                                  created_at=now - dt.timedelta(days=9 - 4 * i), label_count=120 + 60 * i,
                                  metrics={"accuracy": acc, "coverage": 0.55 + 0.08 * i}, status="candidate"))
        s.flush()
        for seq, i in enumerate((0, 2)):
            s.add(ModelEventRow(seq=seq + 1, version_id=f"lite0-head-{i + 1:04d}", action="promote",
                                created_at=now - dt.timedelta(days=8 - 7 * seq)))
    system.model_version = "lite0-head-0003"


@pytest.fixture
def served(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any) -> Iterator[tuple[str, Lookloop]]:
    import uvicorn

    from lookloop.server.app import create_app

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    system.migrate()
    system.upsert_items([i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES])
    seeded = seed_history(system, small_val(grocery), days=14, per_day=16,
                          now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    _reviewer_history(system, seeded)
    _model_history(system, tmp_path)
    from lookloop.humans.runtime import humans_of

    humans_of(system).accounts.add_account("olga", "operator", password=PASSWORD)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(system=system, warm=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", system
    server.should_exit = True
    thread.join(timeout=10)
    system.db.dispose()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        yield b
        b.close()


def test_dashboard_draws_every_chart(served: tuple[str, Lookloop], browser: Any, tmp_path: Path) -> None:
    base, system = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/dashboard")

    # A reviewer is turned away with a clear message.
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
    assert "operators" in page.text_content("#login-error")

    page.fill("#username", "olga")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-loaded=true]", timeout=20000)

    with system.db.session() as s:
        from lookloop.metrics import compute_metrics, parse_when

        m = compute_metrics(s, since=parse_when("14d"))
    # KPI tiles show the API's totals.
    assert page.text_content("[data-kpi='Asks'] .value") == f"{m.totals.asks:,}"
    # Line charts: two series each, one dot per bucket with data.
    for chart, keys in (("accuracy", ("accuracy", "auto_accuracy")), ("coverage", ("coverage", "escalation_rate")),
                        ("answer-time", ("human_answer_p50_s", "human_answer_p95_s"))):
        assert page.locator(f"#chart-{chart} path.series").count() == 2, chart
        dots = sum(1 for p in m.points for k in keys if getattr(p, k) is not None)
        assert page.locator(f"#chart-{chart} circle.point").count() == dots, chart
    # Labels spent: one bar segment per bucket and paid source.
    segments = sum(1 for p in m.points for s, n in p.labels_by_source.items() if n and s not in ("wearer", "import"))
    assert segments > 0 and page.locator("#chart-labels rect.segment").count() == segments
    # Confusion: a k×k grid and its per-class table.
    k = len(m.confusion.classes)
    assert k >= 2 and page.locator("#chart-confusion rect.cell").count() == k * k
    assert page.locator("#per-class tbody tr").count() == len(m.confusion.per_class)
    # Reviewer stats from the review queue, and the model versions.
    assert page.locator("#reviewers tbody tr").count() == 3
    assert "ana" in page.text_content("#reviewers")
    assert system.model_version[:20] in page.text_content("#models")

    # Hovering a point explains it.
    page.locator("#chart-coverage circle.point").last.hover()
    assert "coverage" in page.text_content("#tooltip") or "escalation" in page.text_content("#tooltip")
    page.mouse.move(0, 0)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if os.environ.get("LOOKLOOP_DOCS_SCREENSHOTS"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "dashboard.png")
    assert not errors, errors

    # A new window (same session) comes back signed in; signing out returns to the form.
    page.reload()
    page.wait_for_selector("body[data-loaded=true]", timeout=20000)
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])")
    page.close()
