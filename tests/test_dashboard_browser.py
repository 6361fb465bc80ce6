"""The operator dashboard in real headless Chromium: sign-in, every chart drawn from real API data, the learning loop.

Set LOOKLOOP_DOCS_SCREENSHOTS=1 to also write the screenshot to docs/dashboard.png.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_util import (
    DESKTOP,
    LAUNCH_ARGS,
    PHONE,
    assert_accessible,
    horizontal_overflow,
    screenshot,
    tab_through,
    unringed,
    wait_js,
)
from conftest import REPO, SMALL_CLASSES, make_settings, small_val
from episode_fixtures import seed_history

from lookloop.catalog import grocery_catalog
from lookloop.loop.registry import ModelVersion
from lookloop.system import Lookloop

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "dashboard-test-password"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reviewer_history(system: Lookloop, seeded: Any) -> None:
    """Queue answers for the seeded escalations, as the review queue records them."""
    from lookloop.humans.tables import ReviewAnswerRow, ReviewItemRow

    accounts = system.humans.accounts
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
        golds = [ReviewItemRow(kind="gold", question="what is this?", status="gold", gold_answer="Banana")
                 for _ in range(5)]
        s.add_all(golds)
        s.flush()
        for name in ids:
            for gold in golds:  # one answer per reviewer per item (the database keeps it so)
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
                                  metrics={"accuracy": acc, "coverage": 0.55 + 0.08 * i,
                                           "auto_error": 0.052 - 0.011 * i}, status="candidate"))
        s.flush()
        for seq, i in enumerate((0, 2)):
            s.add(ModelEventRow(seq=seq + 1, version_id=f"lite0-head-{i + 1:04d}", action="promote",
                                created_at=now - dt.timedelta(days=8 - 7 * seq)))
    system.serving.model_version = "lite0-head-0003"
    system.policy = _calibrated_policy(system.settings.alpha, seed=1)


def _calibrated_policy(alpha: float, *, seed: int, n: int = 400) -> Any:
    """A conformal policy calibrated on held-out scores, as serving a registry version sets it."""
    from lookloop.loop.policies import ConformalPolicy

    rng = np.random.default_rng(seed)
    scores = rng.uniform(0, 1, n)
    correct = rng.uniform(0, 1, n) > 0.9 * (1 - scores) ** 3  # sure answers are nearly always right
    policy = ConformalPolicy(alpha)
    policy.calibrate(scores, correct)
    return policy


def _register_good_and_swapped(system: Lookloop) -> tuple[ModelVersion, ModelVersion]:
    """Two versions through the registry, as training stores them: a good one, and a later one trained on more
    labels with bananas and Granny Smith apples swapped (worse on every metric). The good one is promoted."""
    from lookloop.loop.learner import train_identify_head
    from lookloop.loop.registry import ModelArtifacts

    rng = np.random.default_rng(11)
    classes = ["Banana", "Granny-Smith", "Lemon", "Orange"]
    centres = rng.normal(size=(len(classes), 16))

    def artifacts(n: int, swap: dict[str, str]) -> tuple[ModelArtifacts, list[str], list[str]]:
        truth = [classes[i % len(classes)] for i in range(n)]
        x = np.stack([centres[classes.index(t)] + 0.3 * rng.normal(size=16) for t in truth]).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        labels = [swap.get(t, t) for t in truth]
        keys = [f"label-{i:04d}" for i in range(n)]
        scores = rng.uniform(0, 1, 200)
        art = ModelArtifacts(train_identify_head(x, labels), "test-embedder", x, labels, keys,
                             calibration_scores=scores, calibration_correct=rng.uniform(0, 1, 200) < 0.4 + 0.6 * scores)
        return art, keys, labels

    registry = system.registry
    good, keys, labels = artifacts(60, {})
    v1 = registry.register(good, metrics={"accuracy": 0.9, "coverage": 0.62, "auto_error": 0.031},
                           label_keys=keys, label_values=labels, parent_id=None, kind="head")
    bad, bkeys, blabels = artifacts(96, {"Banana": "Granny-Smith", "Granny-Smith": "Banana"})
    v2 = registry.register(bad, metrics={"accuracy": 0.4, "coverage": 0.21, "auto_error": 0.12},
                           label_keys=bkeys, label_values=blabels, parent_id=v1.id, kind="head")
    registry.promote(v1.id)
    return v1, v2


@pytest.fixture
def served(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any) -> Iterator[tuple[str, Lookloop]]:
    system = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    system.migrate()
    system.upsert_items([i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES])
    seeded = seed_history(system, small_val(grocery), days=14, per_day=16,
                          now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    _reviewer_history(system, seeded)
    _model_history(system, tmp_path)

    system.humans.accounts.add_account("olga", "operator", password=PASSWORD)
    with _serving(system) as base:
        yield base, system
    system.db.dispose()


@pytest.fixture
def fresh(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any) -> Iterator[tuple[str, Lookloop]]:
    """A system with a few days of asks and no model version registered yet."""

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    system.migrate()
    system.upsert_items([i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES])
    seed_history(system, small_val(grocery), days=5, per_day=8, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    system.humans.accounts.add_account("olga", "operator", password=PASSWORD)
    with _serving(system) as base:
        yield base, system
    system.db.dispose()


@contextmanager
def _serving(system: Lookloop) -> Iterator[str]:
    """The API and pages on a free local port, in a thread, for as long as the block runs."""
    import uvicorn

    from lookloop.server.app import create_app

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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# The series colours of dashboard/charts.js, to find their ink on the canvas.
BLUE, GREEN, ORANGE, RED, VIOLET = (47, 111, 223), (31, 157, 107), (224, 138, 30), (212, 71, 61), (122, 90, 248)


def _inked(page: Any, chart: str, rgb: tuple[int, int, int]) -> int:
    """How many canvas pixels of the chart are drawn in (about) this colour: the chart library really drew it."""
    return int(page.evaluate("""([chart, rgb]) => {
        let n = 0;
        for (const c of document.querySelectorAll(chart + " canvas")) {
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            for (let i = 0; i < px.length; i += 4) {
                if (Math.abs(px[i] - rgb[0]) + Math.abs(px[i + 1] - rgb[1]) + Math.abs(px[i + 2] - rgb[2]) < 40) n++;
            }
        }
        return n;
    }""", [chart, list(rgb)]))


def _hover_right_edge(page: Any, chart: str) -> None:
    """Points the mouse at the chart's last point: the cursor takes the nearest one; the tooltip shows."""
    over = page.locator(f"{chart} .u-over").first
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#tooltip:not([hidden])")


def _sign_in(page: Any, base: str) -> None:
    page.goto(base + "/dashboard")
    page.fill("#username", "olga")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-loaded=true]", timeout=20000)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
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
    wait_js(page, "document.getElementById('login-error').textContent.length > 0")
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
    # Line charts: two series each, drawn on the canvas in their colours; one value per bucket with data in the
    # chart's table of numbers (its text alternative).
    for chart, keys, colours in (("accuracy", ("accuracy", "auto_accuracy"), (BLUE, GREEN)),
                                 ("coverage", ("coverage", "escalation_rate"), (GREEN, ORANGE)),
                                 ("answer-time", ("human_resolution_p50_s", "human_resolution_p95_s"), (VIOLET, RED))):
        assert page.get_attribute(f"#chart-{chart}", "data-series") == "2", chart
        for colour in colours:
            assert _inked(page, f"#chart-{chart}", colour) > 100, (chart, colour)
        dots = sum(1 for p in m.points for k in keys if getattr(p, k) is not None)
        assert page.locator(f"#chart-{chart} td[data-value]").count() == dots, chart
    # Labels spent: one bar segment per bucket and paid source.
    segments = sum(1 for p in m.points for s, n in p.labels_by_source.items() if n and s not in ("wearer", "import"))
    assert segments > 0 and page.locator("#chart-labels td[data-value]").count() == segments
    assert page.get_attribute("#chart-labels", "data-bars") == str(segments)
    assert _inked(page, "#chart-labels", BLUE) > 500
    # Confusion: a k×k grid and its per-class table.
    k = len(m.confusion.classes)
    assert k >= 2 and page.locator("#chart-confusion td.cell").count() == k * k
    assert page.locator("#per-class tbody tr").count() == len(m.confusion.per_class)
    # Reviewer stats from the review queue, and the model versions.
    assert page.locator("#reviewers tbody tr").count() == 3
    assert "ana" in page.text_content("#reviewers")
    assert system.model_version[:20] in page.text_content("#models")
    # The learning loop: one point per registered version, the serving one marked, the policy's alpha.
    assert page.locator("#chart-loop tr[data-version]").count() == 3
    assert page.get_attribute("#chart-loop tr[data-serving]", "data-version") == "lite0-head-0003"
    assert page.get_attribute("#chart-loop", "data-alpha") is not None
    assert _inked(page, "#chart-loop", BLUE) > 100 and _inked(page, "#chart-loop", RED) > 50
    assert "conformal" in page.text_content("#loop-policy [data-fact=policy]")

    # Hovering a point explains it.
    _hover_right_edge(page, "#chart-coverage")
    assert "coverage" in page.text_content("#tooltip") or "escalation" in page.text_content("#tooltip")
    page.mouse.move(0, 0)
    page.wait_for_selector("#tooltip", state="hidden")

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


def test_dashboard_draws_the_learning_loop(fresh: tuple[str, Lookloop], browser: Any) -> None:
    from lookloop.loop.figures import loop_figures

    base, system = fresh
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _sign_in(page, base)

    # No trained version yet: the start-up model serves, and the empty state says so; coverage by day still shows.
    empty = page.locator("#loop-empty")
    assert empty.is_visible()
    assert "Serving the start-up model" in empty.text_content() and "run lookloop train" in empty.text_content()
    assert page.locator("#chart-loop canvas").count() == 0
    assert page.get_attribute("#loop", "data-versions") == "0"
    days = loop_figures(system.serving)["by_day"]
    assert len(days) >= 5
    assert page.locator("#chart-loop-days td[data-value]").count() == len(days)
    assert page.get_attribute("#chart-loop-days", "data-points") == str(len(days))
    assert _inked(page, "#chart-loop-days", GREEN) > 100
    assert "Coverage by day" in page.text_content("#chart-loop-days caption")
    # The serving policy is a fixed threshold: no alpha, no error bound.
    assert "fixed" in page.text_content("#loop-policy [data-fact=policy]")
    assert "not calibrated" in page.text_content("#loop-policy [data-fact=bound]")

    # Two versions registered and one promoted; refreshing draws one point group per version.
    v1, v2 = _register_good_and_swapped(system)
    page.click("#refresh")
    page.wait_for_selector("#loop[data-versions='2']", timeout=20000)
    assert page.locator("#loop-empty").count() == 0
    rows = page.locator("#chart-loop tr[data-version]")
    assert rows.count() == 2
    assert {rows.nth(i).get_attribute("data-version") for i in range(2)} == {v1.id, v2.id}
    assert [rows.nth(i).get_attribute("data-labels") for i in range(2)] == ["60", "96"]  # x: labels seen
    assert page.get_attribute("#chart-loop tr[data-serving]", "data-version") == v1.id
    for series in ("accuracy", "coverage", "auto_error"):
        assert page.locator(f"#chart-loop td[data-series={series}][data-value]").count() == 2, series
    assert page.get_attribute("#chart-loop", "data-series") == "3"
    assert page.get_attribute("#chart-loop", "data-alpha") is None  # the fixed threshold has no alpha
    assert "2 model versions" in page.text_content("#chart-loop caption")

    # Serving a calibrated conformal policy adds its alpha line and the certified bound.
    policy = _calibrated_policy(system.settings.alpha, seed=2)
    system.policy = policy
    page.click("#refresh")
    page.wait_for_selector("#chart-loop[data-alpha]", state="attached", timeout=20000)
    assert float(page.get_attribute("#chart-loop", "data-alpha")) == system.settings.alpha
    assert "α" in page.text_content("#chart-loop .legend")
    assert "α" in page.text_content("#chart-loop caption")
    facts = page.text_content("#loop-policy")
    assert policy.name in facts and f"{policy.n_calibration:,}" in facts
    assert page.text_content("#loop-policy [data-fact=calibration]").endswith(f"{policy.n_calibration:,}")
    assert "≤" in page.text_content("#loop-policy [data-fact=bound]")
    assert v1.id in page.text_content("#loop-policy [data-fact=serving]")

    # Hovering a version's point names it and its metrics (v2 has seen the most labels: the rightmost point).
    _hover_right_edge(page, "#chart-loop")
    tip = page.text_content("#tooltip")
    assert v2.id in tip and "96 labels" in tip and "accuracy 40.0%" in tip
    page.mouse.move(0, 0)
    assert not errors, errors
    page.close()


def test_dashboard_shows_guarantees_per_group(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any,
                                              browser: Any) -> None:
    """The demo as it starts (calibrated per group at once): each group's figures and "no guarantee yet"."""
    from conftest import build_small_system

    system = build_small_system(make_settings(tmp_path, data_dir, model_dir, startup_calibration=True), grocery)
    for p in small_val(grocery, per_class=1):
        system.ask("what is this?", Path(p.path).read_bytes())
    system.humans.accounts.add_account("olga", "operator", password=PASSWORD)
    with _serving(system) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        _sign_in(page, base)
        fruit = page.locator("#groups tr[data-group=Fruit]")
        to_go = system.serving.guarantees()["Fruit"].to_go
        assert f"no guarantee yet: {to_go} audit labels to go" in fruit.text_content()
        assert page.locator("#groups tr[data-group=unknown]").count() == 1
        assert "certified in 0 of 3 groups" in page.text_content("#loop-policy [data-fact=bound]")
        page.locator("#groups-card").screenshot(path=str(tmp_path / "groups.png"))
        if os.environ.get("LOOKLOOP_DOCS_SCREENSHOTS"):
            shutil.copyfile(tmp_path / "groups.png", REPO / "docs" / "dashboard-groups.png")
        assert not errors, errors
        page.close()
    system.db.dispose()


# -- issue 14: the PNG report signed in, accessibility, a phone ---------------------------------------------------


def test_png_report_downloads_signed_in(fresh: tuple[str, Lookloop], browser: Any) -> None:
    """The report is fetched with the operator's token and saved as a PNG (a plain link opened a 401)."""
    base, _ = fresh
    page = browser.new_page(viewport=DESKTOP)
    _sign_in(page, base)
    page.select_option("#window", "7d")
    page.wait_for_selector("body[data-loaded=true]")
    with page.expect_download(timeout=20_000) as download:
        page.click("#report")
    saved = download.value
    assert saved.suggested_filename == "lookloop-report-7d.png"
    data = Path(saved.path()).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "report" in page.text_content("#status")
    page.close()


def test_dashboard_is_accessible_and_fits_a_phone(served: tuple[str, Lookloop], browser: Any,
                                                  tmp_path: Path) -> None:
    """axe-core: no serious or critical violation, signed out or in; every control shows its focus; at 390×844
    nothing scrolls sideways. Screenshots at 1280×800 and 390×844."""
    base, _ = served
    page = browser.new_page(viewport=DESKTOP)
    page.goto(base + "/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    assert_accessible(page, "dashboard sign-in")
    _sign_in(page, base)
    assert_accessible(page, "dashboard")
    stops = tab_through(page)
    assert len(stops) >= 6 and not unringed(stops), unringed(stops)
    page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.wait_for_selector("#tooltip", state="hidden")
    screenshot(page, "dashboard-1280", tmp_path)
    screenshot(page, "dashboard-1280-full", tmp_path, full_page=True)

    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    _sign_in(phone, base)
    assert horizontal_overflow(phone) <= 0
    assert_accessible(phone, "dashboard on a phone")
    screenshot(phone, "dashboard-390", tmp_path)
    phone.close()
    page.close()


# -- issue 14: honest figures; promotion and rollback that say what they did ---------------------------------------


@pytest.fixture
def few(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any) -> Iterator[tuple[str, Lookloop]]:
    """A day with a handful of asks: 4 labels, escalations a person answered, could not tell, or never got to."""
    from episode_fixtures import add_episode

    from lookloop.humans.tables import ReviewAnswerRow, ReviewItemRow
    from lookloop.store.tables import AskRow

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir))
    system.migrate()
    system.upsert_items([i for i in grocery_catalog(grocery.root) if i.name in SMALL_CLASSES])
    img = small_val(grocery)[0]
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    for i, (truth, guess) in enumerate([("Banana", "Banana"), ("Banana", "Cucumber"), ("Lemon", "Banana")]):
        add_episode(system, image=img, truth=truth, guess=guess, decision="answer", label_source="wearer",
                    created_at=t0 + dt.timedelta(minutes=i), feedback=("right" if truth == guess else "wrong",
                                                                       None, False))
    answered = add_episode(system, image=img, truth="Banana", guess="Cucumber", decision="escalate",
                           created_at=t0 + dt.timedelta(minutes=5), label_source="human", label_after_s=20,
                           author="ana")
    rejects = [add_episode(system, image=img, truth="Banana", guess="Cucumber", decision="escalate",
                           created_at=t0 + dt.timedelta(minutes=6 + i))["id"] for i in range(2)]
    add_episode(system, image=img, truth="Banana", guess="Cucumber", decision="escalate",
                created_at=t0 + dt.timedelta(minutes=9))  # nobody has answered it yet
    ana = system.humans.accounts.add_account("ana", "reviewer", password=PASSWORD)[0].id
    with system.db.session() as s:
        for ask_id in rejects:
            row = s.get(AskRow, ask_id)
            assert row is not None
            row.outcome, row.final_answer = "rejected", "A helper could not tell what this is."
            row.answered_at = row.created_at + dt.timedelta(seconds=600)
        item = ReviewItemRow(ask_id=answered["id"], question="what is this?", status="resolved",
                             resolved_value="Banana", created_at=t0)
        s.add(item)
        s.flush()
        s.add(ReviewAnswerRow(item_id=item.id, account_id=ana, action="answer", value="Banana", agreed=True,
                              duration_ms=4000))
    system.humans.accounts.add_account("olga", "operator", password=PASSWORD)
    with _serving(system) as base:
        yield base, system
    system.db.dispose()


def test_every_figure_says_what_it_rests_on(few: tuple[str, Lookloop], browser: Any, tmp_path: Path) -> None:
    """25% of 4 labels, with a warning; human time to resolution counts the "can't tell"s and the one still waiting,
    not only the one labelled; one coverage definition, said on the page; no agreement of a reviewer with herself;
    whole-number ticks for counts."""
    base, system = few
    page = browser.new_page(viewport=DESKTOP)
    _sign_in(page, base)

    def tile(name: str, part: str) -> str:
        return str(page.text_content(f"[data-kpi='{name}'] {part}")).strip()

    # 3 wearer labels and the helper's: 1 of the AI's 4 guesses was right
    assert (tile("Accuracy", ".value"), tile("Accuracy", ".sub")) == ("25.0%", "of 4 labels")
    assert tile("Accuracy", ".few") == "⚠ only 4: under 30, may be chance"
    assert (tile("Coverage", ".value"), tile("Coverage", ".sub")) == ("42.9%", "of 7 asks")
    assert tile("Coverage", ".more") == "share of asks the AI answered without a person"
    # 20 s, 600 s, 600 s and about two hours of waiting: the median is the "can't tell"s' 600 s (10 min), where the
    # labelled item alone would have said 20 s.
    assert tile("Human time to resolution", ".value") == "10.0 min"
    assert tile("Human time to resolution", ".sub") == "median of 4 escalations"
    assert "1 answered, 2 can't tell, 1 still waiting" in tile("Human time to resolution", ".more")
    # One coverage: the learning loop's panel has no second, identify-only figure.
    assert page.locator("#loop-policy [data-fact=live]").count() == 0
    assert "identify asks" not in page.text_content("#board")
    assert "share of asks the AI answered without a person" in page.text_content("#loop")
    # Counts are whole numbers on their axis.
    ticks = page.get_attribute("#chart-labels", "data-ticks").split(",")
    assert ticks and all(t.isdigit() for t in ticks), ticks
    # One reviewer settled her item alone: no agreement figure; per-class figures say what they rest on.
    assert page.text_content("#reviewers tbody tr td:nth-child(5)") == "– (none shared)"
    recall = page.locator("#per-class tbody tr", has_text="Banana").locator("td").nth(1)
    assert re.fullmatch(r"\d+(\.\d)?% of \d+ ⚠", recall.inner_text()), recall.inner_text()
    assert_accessible(page, "dashboard with few cases")
    screenshot(page, "dashboard-few", tmp_path)
    page.close()


@pytest.fixture
def trained(tmp_path: Path, data_dir: Path, model_dir: Path, grocery: Any) -> Iterator[tuple[str, Lookloop]]:
    """A small system serving its start-up model (nothing promoted yet)."""
    from conftest import build_small_system

    system = build_small_system(make_settings(tmp_path, data_dir, model_dir), grocery)
    system.humans.accounts.add_account("olga", "operator", password=PASSWORD)
    with _serving(system) as base:
        yield base, system
    system.db.dispose()


def test_promotion_and_rollback_say_what_they_did(trained: tuple[str, Lookloop], browser: Any) -> None:
    """With one model serving there is nothing to roll back to (no button), and the learning loop says which
    model serves; Promote says what it did; Roll back names the version it returns to, returns to it, and
    goes once nothing served before."""
    from lookloop.loop.learner import train_identify_head
    from lookloop.loop.registry import ModelArtifacts
    from lookloop.models.embcache import embed_paths

    base, system = trained
    page = browser.new_page(viewport=DESKTOP)
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    _sign_in(page, base)
    startup = system.model_version
    assert page.locator("#rollback").count() == 0
    assert startup[:20] in page.text_content("#models")
    empty = page.text_content("#loop-empty")
    assert "No model versions yet" not in empty and "Serving the start-up model" in empty

    paths, labels, keys = system.labelled_images()
    x = embed_paths(system.embedding_cache, system.embedder, paths)
    version = system.registry.register(
        ModelArtifacts(train_identify_head(x, labels), system.embedder.version, x, labels, keys),
        metrics={"accuracy": 0.9}, label_keys=keys, label_values=labels, parent_id=None, kind="head")
    page.click("#refresh")
    promote = page.get_by_role("button", name=f"Promote {version.id}")
    promote.wait_for(timeout=20_000)
    promote.click()
    wait_js(page, "document.getElementById('models-done').textContent.startsWith('Promoted')",
                           timeout=60_000)
    assert system.model_version == version.id
    assert page.text_content("#models-done").startswith(f"Promoted {version.id}: it serves now instead of {startup}")
    kept = system.registry.rollback_target()
    assert kept is not None and "startup" in kept
    rollback = page.locator("#rollback")
    assert rollback.inner_text().startswith("Roll back to ") and kept[:30] in rollback.inner_text()
    assert_accessible(page, "dashboard after a promotion")
    rollback.click()
    wait_js(page, "document.getElementById('models-done').textContent.startsWith('Rolled back')",
                           timeout=60_000)
    assert page.text_content("#models-done") == f"Rolled back: {kept} serves again instead of {version.id}"
    assert system.model_version == kept
    assert page.locator("#rollback").count() == 0  # nothing served before the start-up model
    assert asked == [f"Promote {version.id}?", f"Roll back: serve {kept} again instead of {version.id}?"]
    page.close()
