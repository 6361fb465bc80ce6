"""Operator metrics: definitions checked on hand-built episodes, a seeded history, the API and its plots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings, small_val
from episode_fixtures import add_episode, seed_history
from fastapi.testclient import TestClient

from lookloop.domain import utcnow
from lookloop.errors import BadInput
from lookloop.metrics import PLOTS, compute_metrics, parse_when, percentile, plot_png
from lookloop.store.tables import LabelRow
from lookloop.system import Lookloop

HOUR = utcnow().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path, database_url: str) -> Iterator[Lookloop]:
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url))  # SQLite and Postgres
    s.migrate()
    yield s
    s.db.dispose()


@pytest.fixture
def two_hours(system: Lookloop, grocery: Any) -> dict[str, dict[str, Any]]:
    img = small_val(grocery)[0]
    a = HOUR + dt.timedelta(minutes=5)
    b = HOUR + dt.timedelta(hours=1, minutes=5)
    eps = {
        "right": add_episode(system, image=img, truth="Banana", guess="Banana", decision="answer", created_at=a,
                             label_source="wearer", label_after_s=4),
        "wrong": add_episode(system, image=img, truth="Granny-Smith", guess="Cucumber", decision="answer",
                             created_at=a + dt.timedelta(minutes=1), label_source="wearer", label_after_s=4),
        "silent": add_episode(system, image=img, truth="Banana", guess="Banana", decision="answer",
                              created_at=a + dt.timedelta(minutes=2)),
        "slow": add_episode(system, image=img, truth="Granny-Smith", guess="Cucumber", decision="escalate",
                            created_at=a + dt.timedelta(minutes=3), label_source="human", label_after_s=30),
        "fast": add_episode(system, image=img, truth="Cucumber", guess="Cucumber", decision="escalate",
                            created_at=b, label_source="human", label_after_s=10),
        "waiting": add_episode(system, image=img, truth="Banana", guess="Cucumber", decision="escalate",
                               created_at=b + dt.timedelta(minutes=1)),
    }
    # Imported labels are data, not labels anybody spent time on.
    system.import_labelled_images(small_val(grocery)[:3], source="import")
    return eps


def test_definitions_per_bucket(system: Lookloop, two_hours: dict[str, Any]) -> None:
    with system.db.session() as s:
        m = compute_metrics(s, since=HOUR, until=HOUR + dt.timedelta(hours=3), bucket="hour")
    assert m.bucket == "hour" and [p.start for p in m.points] == [HOUR + dt.timedelta(hours=h) for h in range(3)]
    first, second, empty = m.points
    assert (first.asks, first.ai_answered, first.escalated) == (4, 3, 1)
    assert first.coverage == 0.75 and first.escalation_rate == 0.25
    assert (first.labelled, first.correct, first.accuracy) == (3, 1, round(1 / 3, 4))
    assert (first.auto_labelled, first.auto_correct, first.auto_accuracy) == (2, 1, 0.5)
    assert first.human_answered == 1 and first.human_answer_p50_s == pytest.approx(30)
    assert first.labels_spent == 1 and first.labels_by_source == {"human": 1, "wearer": 2}
    assert (second.asks, second.coverage, second.escalation_rate) == (2, 0.0, 1.0)
    assert second.human_answered == 1 and second.human_answer_p50_s == pytest.approx(10)
    assert (empty.asks, empty.coverage, empty.accuracy, empty.human_answer_p50_s) == (0, None, None, None)
    t = m.totals
    assert t.asks == 6 and t.labels_spent == 2 and "import" not in t.labels_by_source
    assert t.human_answer_p50_s == pytest.approx(20) and t.human_answer_p95_s == pytest.approx(29)


def test_latest_label_wins_and_confusion(system: Lookloop, two_hours: dict[str, Any]) -> None:
    # A later human label overrides the wearer's: the "right" ask becomes a miss.
    with system.db.session() as s:
        s.add(LabelRow(ask_id=two_hours["right"]["id"], value="Cucumber", source="human", author="bo",
                       created_at=HOUR + dt.timedelta(minutes=50)))
    with system.db.session() as s:
        m = compute_metrics(s, since=HOUR, until=HOUR + dt.timedelta(hours=2), bucket="hour")
    assert m.points[0].correct == 0
    c = m.confusion
    assert c.total == 4 and sum(map(sum, c.matrix)) == 4  # "silent" and "waiting" have no label
    assert set(c.classes) == {"Banana", "Cucumber", "Granny-Smith"}
    assert c.matrix[c.classes.index("Granny-Smith")][c.classes.index("Cucumber")] == 2
    assert c.matrix[c.classes.index("Cucumber")][c.classes.index("Banana")] == 1
    stats = {x["label"]: x for x in c.per_class}
    assert stats["Granny-Smith"]["recall"] == 0.0
    # Cucumber: labelled twice, found once; guessed three times, right once.
    assert stats["Cucumber"]["recall"] == 0.5 and stats["Cucumber"]["precision"] == round(1 / 3, 4)
    assert stats["Banana"]["support"] == 0 and stats["Banana"]["recall"] is None


def test_confusion_folds_rare_classes(system: Lookloop, grocery: Any) -> None:
    img = small_val(grocery)[0]
    for i, name in enumerate(["A", "A", "A", "B", "B", "C", "D"]):
        add_episode(system, image=img, truth=name, guess="A", decision="answer",
                    created_at=HOUR + dt.timedelta(minutes=i), label_source="human")
    with system.db.session() as s:
        c = compute_metrics(s, since=HOUR, until=HOUR + dt.timedelta(hours=1), top_classes=2).confusion
    assert c.classes == ["A", "B", "(other)"]
    assert c.matrix == [[3, 0, 0], [2, 0, 0], [2, 0, 0]]


def test_seeded_history_matches_what_was_written(system: Lookloop, grocery: Any) -> None:
    seeded = seed_history(system, small_val(grocery), days=6, per_day=10)
    with system.db.session() as s:
        m = compute_metrics(s, since=parse_when("8d"), bucket="day")
    asks = seeded.asks
    assert m.totals.asks == len(asks)
    assert m.totals.escalated == sum(a["decision"] == "escalate" for a in asks)
    labelled = [a for a in asks if a["label_value"]]
    assert m.totals.labelled == len(labelled)
    assert m.totals.correct == sum(a["label_value"] == a["guess"] for a in labelled)
    waits = [a["label_after_s"] for a in asks if a["decision"] == "escalate"]
    assert m.totals.human_answer_p50_s == pytest.approx(percentile(waits, 50), abs=1e-3)
    assert sum(p.asks for p in m.points) == len(asks)
    assert m.totals.labels_spent == sum(a["label_source"] == "human" for a in asks)


def test_human_time_counts_rejects_cancels_and_the_still_waiting(system: Lookloop, grocery: Any) -> None:
    """Time to resolution over every escalation: a person's answer, a "can't tell" (dated by the ask, or by its
    review item when an older version did not date it), a cancel, and one still waiting (its wait so far); the
    answer-only time stays as it was. Each ending is counted."""
    from lookloop.humans.tables import ReviewItemRow
    from lookloop.store.tables import AskRow

    img = small_val(grocery)[0]
    t0 = utcnow() - dt.timedelta(hours=2)

    def escalated(minutes: int, **kw: Any) -> str:
        return str(add_episode(system, image=img, truth="Banana", guess="Cucumber", decision="escalate",
                               created_at=t0 + dt.timedelta(minutes=minutes), **kw)["id"])

    escalated(0, label_source="human", label_after_s=10)
    rejected = escalated(1)
    old_reject = escalated(2)
    cancelled = escalated(3)
    escalated(4)  # still waiting
    with system.db.session() as s:
        for ask_id, outcome, after in ((rejected, "rejected", 600), (old_reject, "rejected", None),
                                       (cancelled, "cancelled", 40)):
            row = s.get(AskRow, ask_id)
            assert row is not None
            row.outcome = outcome
            if after is not None:
                row.answered_at = row.created_at + dt.timedelta(seconds=after)
        s.add(ReviewItemRow(ask_id=old_reject, question="what is this?", status="resolved", resolved_value="",
                            created_at=t0, resolved_at=t0 + dt.timedelta(minutes=2, seconds=900)))
    with system.db.session() as s:
        t = compute_metrics(s, since=t0 - dt.timedelta(hours=1)).totals
    assert (t.escalated, t.human_answered, t.human_rejected, t.human_cancelled, t.human_waiting) == (5, 1, 2, 1, 1)
    assert t.human_answer_p50_s == pytest.approx(10)
    # 10 s, 40 s, 600 s, 900 s and about 116 minutes of waiting so far: the middle one is the reject's 600 s.
    assert t.human_resolution_p50_s == pytest.approx(600)
    assert t.human_resolution_p95_s is not None and t.human_resolution_p95_s > 900


def test_one_coverage_definition_for_the_metrics_and_the_learning_loop(system: Lookloop, grocery: Any) -> None:
    """Coverage is the share of asks, of every skill, the AI answered without a person: the loop's live figure
    and its days say the same as the metrics (they used to count identify asks only)."""
    from lookloop.loop.figures import loop_figures

    img = small_val(grocery)[0]
    at = utcnow() - dt.timedelta(minutes=30)
    for i, (skill, decision) in enumerate([("identify", "answer"), ("identify", "escalate"), ("read", "answer"),
                                           ("notes", "answer"), ("price", "escalate")]):
        add_episode(system, image=img, truth="Banana", guess="Banana", decision=decision, skill=skill,
                    created_at=at + dt.timedelta(seconds=i))
    with system.db.session() as s:
        coverage = compute_metrics(s, since=at - dt.timedelta(hours=1)).totals.coverage
    figures = loop_figures(system.serving)
    assert coverage == 0.6
    assert figures["live"]["coverage"] == pytest.approx(coverage) and figures["live"]["asks"] == 5
    assert sum(d["asks"] for d in figures["by_day"]) == 5


def test_agreement_counts_only_items_two_people_answered(system: Lookloop, grocery: Any) -> None:
    """A reviewer who settles items alone agrees with themselves: no agreement figure, instead of 100%."""
    from lookloop.humans.tables import ReviewAnswerRow, ReviewItemRow

    accounts = system.humans.accounts
    ana = accounts.add_account("ana", "reviewer", password="a-long-test-password")[0].id
    bo = accounts.add_account("bo", "reviewer", password="a-long-test-password")[0].id
    with system.db.session() as s:
        items = [ReviewItemRow(question="what is this?", status="resolved") for _ in range(4)]
        s.add_all(items)
        s.flush()
        for item in items[:3]:  # settled by ana alone
            s.add(ReviewAnswerRow(item_id=item.id, account_id=ana, action="answer", value="Banana", agreed=True))
        s.add(ReviewAnswerRow(item_id=items[3].id, account_id=ana, action="answer", value="Banana", agreed=True))
        s.add(ReviewAnswerRow(item_id=items[3].id, account_id=bo, action="answer", value="Lemon", agreed=False))
    stats = {r.username: r for r in system.humans.queue.stats()}
    assert (stats["ana"].items, stats["ana"].agreement, stats["ana"].agreement_items) == (4, 1.0, 1)
    assert (stats["bo"].agreement, stats["bo"].agreement_items) == (0.0, 1)
    with system.db.session() as s:
        s.query(ReviewAnswerRow).filter(ReviewAnswerRow.account_id == bo).delete()
    alone = system.humans.queue.stats()[0]
    assert (alone.username, alone.items, alone.agreement, alone.agreement_items) == ("ana", 4, None, 0)


def test_time_parsing_and_bad_input(system: Lookloop) -> None:
    now = utcnow()
    assert parse_when("7d", now=now) == now - dt.timedelta(days=7)
    assert parse_when("2024-05-01") == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert parse_when("") is None
    with pytest.raises(BadInput, match="cannot read the time"):
        parse_when("last tuesday")
    with system.db.session() as s:
        with pytest.raises(BadInput, match="before"):
            compute_metrics(s, since=now, until=now - dt.timedelta(days=1))
        with pytest.raises(BadInput, match="unknown bucket"):
            compute_metrics(s, bucket="fortnight")
        with pytest.raises(BadInput, match="too many buckets"):
            compute_metrics(s, since=now - dt.timedelta(days=400), until=now, bucket="hour")


def test_plots_are_png(system: Lookloop, grocery: Any) -> None:
    seed_history(system, small_val(grocery), days=3, per_day=6)
    with system.db.session() as s:
        m = compute_metrics(s, since=parse_when("4d"))
    for name in PLOTS:
        png = plot_png(m, name, dpi=50)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    with pytest.raises(BadInput):
        plot_png(m, "pie")


# -- the operator API ----------------------------------------------------------------------------------------


def login(client: TestClient, system: Lookloop, username: str, role: str) -> dict[str, str]:

    _, password = system.humans.accounts.add_account(username, role, password="a-long-test-password")
    r = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def client(system: Lookloop) -> Iterator[TestClient]:
    from lookloop.server.app import create_app

    with TestClient(create_app(system=system, warm=False)) as c:
        yield c


def test_api_needs_an_operator(client: TestClient, system: Lookloop) -> None:
    assert client.get("/v1/operators/metrics").status_code == 401
    reviewer = login(client, system, "rita", "reviewer")
    r = client.get("/v1/operators/summary", headers=reviewer)
    assert r.status_code == 403 and "operator" in r.json()["detail"]


def test_api_metrics_summary_and_plots(client: TestClient, system: Lookloop, two_hours: dict[str, Any]) -> None:
    op = login(client, system, "olga", "operator")
    since = HOUR.isoformat()
    r = client.get("/v1/operators/metrics", params={"since": since, "bucket": "hour"}, headers=op)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["points"][0]["asks"] == 4 and body["points"][0]["coverage"] == 0.75
    assert body["totals"]["labels_spent"] == 2
    r = client.get("/v1/operators/summary", params={"since": "1d"}, headers=op)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metrics"]["totals"]["asks"] == 6
    assert body["models"]["serving"] == system.model_version and body["models"]["versions"]
    assert isinstance(body["reviewers"], list) and "open" in body["queue"]
    r = client.get("/v1/operators/plots/overview.png", params={"since": "1d"}, headers=op)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert client.get("/v1/operators/plots/pie.png", headers=op).status_code == 404
    bad = client.get("/v1/operators/metrics", params={"since": "whenever"}, headers=op)
    assert bad.status_code == 422 and "cannot read the time" in bad.json()["detail"]
    assert client.get("/v1/operators/metrics", params={"bucket": "year"}, headers=op).status_code == 422


def test_dashboard_page_is_served(client: TestClient) -> None:
    r = client.get("/dashboard")
    assert r.status_code == 200 and 'id="chart-confusion"' in r.text and "/pages/dashboard.js" in r.text
    for asset in ("dashboard.js", "charts.js", "api.js", "dashboard.css", "vendor/uPlot.iife.min.js",
                  "vendor/uPlot.min.css"):
        assert client.get(f"/pages/{asset}").status_code == 200, asset
    assert client.get("/pages/vendor/uPlot.iife.min.js").headers["content-type"].startswith("text/javascript")
    # Scripts and styles only, and nothing outside the pages folder.
    for path in ("/pages/secrets.txt", "/pages/dashboard.html", "/pages/vendor/uPlot.LICENSE", "/pages/..%2Froutes.py",
                 "/pages/..%2F..%2Fserver%2Fapp.py", "/dashboard/dashboard.js"):
        assert client.get(path).status_code == 404, path


def test_api_model_versions_from_the_registry(client: TestClient, system: Lookloop, tmp_path: Path) -> None:
    from lookloop.loop.tables import ModelVersionRow

    with system.db.session() as s:
        s.add(ModelVersionRow(id="v-0001", artifact_dir=str(tmp_path / "v1"), metrics={"accuracy": 0.81},
                              label_count=12))
    op = login(client, system, "olga", "operator")
    body = client.get("/v1/operators/models", headers=op).json()
    assert body["registry"] is True
    versions = {v["version"]: v for v in body["versions"]}
    assert versions["v-0001"]["metrics"]["accuracy"] == 0.81 and versions["v-0001"]["info"]["label_count"] == 12
    assert versions[system.model_version]["serving"] is True  # the serving model shows even if unregistered
    r = client.post("/v1/operators/models/v-0001/promote", headers=op)
    if not body["actions"]:
        assert r.status_code == 503 and "registry" in r.json()["detail"]
    else:
        # This version's artifacts do not exist: refused with a clear message, and nothing switches.
        assert r.status_code == 404 and "artifacts" in r.json()["detail"], r.text
        assert client.get("/v1/operators/models", headers=op).json()["serving"] == system.model_version
