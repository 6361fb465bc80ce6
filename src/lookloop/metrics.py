"""Operator metrics computed from the asks and labels tables: how well the loop does, over time.

Definitions (each per time bucket, by the ask's creation time unless said otherwise):

- coverage: share of asks the AI answered without a person (decision ``answer``), every skill — the one
  definition of coverage (``COVERAGE``), used by the dashboard and the learning loop's figures alike;
- escalation rate: share of asks handed to a person (decision ``escalate``);
- accuracy: share of labelled asks whose AI guess equals the label (latest label wins);
  ``auto_accuracy`` is the same over the asks the AI answered on its own — the error rate it promised;
- human time to resolution: seconds from an escalated ask until a person settled it, with an answer or with
  "can't tell"; an escalation nobody settled counts with the time it waited — until the wearer cancelled, or
  until now while it still waits (at least that long) — so slow and failed escalations are never left out.
  ``human_answered``, ``human_rejected``, ``human_cancelled`` and ``human_waiting`` say how they ended;
- human answer time: the same, over the escalations a person answered with a label only;
- labels spent: labels people produced (every source except free ones: imports and wearer feedback),
  bucketed by the label's creation time;
- confusion: (label, AI guess) counts over labelled identify asks;
- per group (the family of the predicted item, or "unknown" when the outlier gate flagged the ask), over identify
  asks: coverage and escalation rate, the auto-answer error measured on audit asks (random spot checks, so an
  unbiased sample) the AI answered, and what the serving policy certifies there — a bound, or
  "no guarantee yet: N audit labels to go".

Everything is computed in Python over plain column selects so that SQLite and Postgres agree.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from lookloop.domain import Outcome, ai_label, as_utc, normalise_label, percentile, utcnow
from lookloop.errors import BadInput
from lookloop.humans.tables import ReviewItemRow
from lookloop.loop.calibration import Guarantee
from lookloop.loop.policies import UNKNOWN_GROUP
from lookloop.store.db import Database
from lookloop.store.tables import AskRow, LabelRow

BucketName = Literal["hour", "day", "week"]
BUCKETS: dict[str, dt.timedelta] = {
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(weeks=1),
}
# Labels nobody was paid for: the imported data sets and the wearer's own "right"/"wrong".
FREE_SOURCES = frozenset({"import", "wearer"})
OTHER = "(other)"
_ENDED = frozenset({Outcome.REJECTED.value, Outcome.CANCELLED.value})
COVERAGE = "share of asks the AI answered without a person"
# A figure resting on fewer cases than this is shown with a warning that it may be chance.
MIN_SAMPLE = 30


def parse_when(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """``2024-05-01``, an ISO datetime, or a span back from now such as ``7d``, ``12h``, ``2w``, ``30m``."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    m = re.fullmatch(r"(\d+)\s*([mhdw])", text.lower())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        try:
            delta = {"m": dt.timedelta(minutes=n), "h": dt.timedelta(hours=n), "d": dt.timedelta(days=n),
                     "w": dt.timedelta(weeks=n)}[unit]
            return (now or utcnow()) - delta
        except OverflowError:
            raise BadInput(f"the span {text!r} reaches back before the year 1; use a shorter one") from None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(
            f"cannot read the time {text!r}: use a date (2024-05-01), an ISO time, or a span such as 7d or 12h"
        ) from None
    return as_utc(when)


def bucket_start(when: dt.datetime, bucket: str) -> dt.datetime:
    when = as_utc(when)
    if bucket == "hour":
        return when.replace(minute=0, second=0, microsecond=0)
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    return day - dt.timedelta(days=day.weekday())


def choose_bucket(since: dt.datetime, until: dt.datetime) -> str:
    """About 24–100 points on a chart, whatever the window."""
    span = until - since
    if span <= dt.timedelta(days=3):
        return "hour"
    if span <= dt.timedelta(days=120):
        return "day"
    return "week"


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


@dataclass
class Point:
    """One time bucket."""

    start: dt.datetime
    asks: int = 0
    ai_answered: int = 0
    escalated: int = 0
    coverage: float | None = None
    escalation_rate: float | None = None
    labelled: int = 0
    correct: int = 0
    accuracy: float | None = None
    auto_labelled: int = 0
    auto_correct: int = 0
    auto_accuracy: float | None = None
    human_answered: int = 0
    human_rejected: int = 0
    human_cancelled: int = 0
    human_waiting: int = 0
    human_resolution_p50_s: float | None = None
    human_resolution_p95_s: float | None = None
    human_answer_p50_s: float | None = None
    human_answer_p95_s: float | None = None
    labels_spent: int = 0
    labels_by_source: dict[str, int] = field(default_factory=dict)


@dataclass
class Confusion:
    """Rows are the labels (truth), columns the AI's guesses; the rarest classes fold into ``(other)``."""

    classes: list[str]
    matrix: list[list[int]]
    per_class: list[dict[str, Any]]
    total: int


@dataclass
class GroupFigures:
    """One group's identify asks in the window, and what the serving policy certifies in it."""

    group: str
    asks: int = 0
    answered: int = 0
    escalated: int = 0
    coverage: float | None = None
    escalation_rate: float | None = None
    audit_answered: int = 0  # labelled audit asks the AI answered: what ``error`` rests on
    audit_wrong: int = 0
    error: float | None = None
    bound: float | None = None  # the certified auto-answer error bound; None: none
    calibration_labels: int = 0  # what the bound rests on (held-out and audit labels of the group)
    labels_to_go: int | None = None
    guarantee: str = ""


@dataclass
class Metrics:
    since: dt.datetime
    until: dt.datetime
    bucket: str
    points: list[Point]
    totals: Point
    confusion: Confusion
    groups: list[GroupFigures] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


@dataclass
class _AskFacts:
    id: str
    created_at: dt.datetime
    skill: str
    decision: str
    guess: str
    outcome: str = ""
    ended_at: dt.datetime | None = None  # when a reject or a cancel settled it
    truth: str | None = None
    first_human_at: dt.datetime | None = None

    def resolution_s(self, now: dt.datetime) -> float:
        """Seconds from the ask until a person settled it (a label or "can't tell"), else until it was
        cancelled, else until ``now`` (still waiting)."""
        end = self.first_human_at or self.ended_at or now
        return max(0.0, (end - self.created_at).total_seconds())


def _load(
    session: Session, since: dt.datetime, until: dt.datetime
) -> tuple[list[_AskFacts], list[tuple[dt.datetime, str]]]:
    rows = session.execute(
        select(AskRow.id, AskRow.created_at, AskRow.skill, AskRow.decision, AskRow.result, AskRow.answer_text,
               AskRow.outcome, AskRow.answered_at)
        .where(AskRow.created_at >= since, AskRow.created_at < until)
        .order_by(AskRow.created_at)
    ).all()
    facts = {r[0]: _AskFacts(r[0], as_utc(r[1]), r[2], r[3], ai_label(r[4], r[5]), r[6] or "") for r in rows}
    ended = [r for r in rows if r[3] == "escalate" and r[6] in _ENDED]
    for r in ended:
        facts[r[0]].ended_at = as_utc(r[7]) if r[7] is not None else None
    # Rejects stored before their time was: the review item says when it was settled.
    undated = [r[0] for r in ended if r[7] is None]
    for i in range(0, len(undated), 500):
        for ask_id, resolved_at in session.execute(
            select(ReviewItemRow.ask_id, ReviewItemRow.resolved_at)
            .where(ReviewItemRow.ask_id.in_(undated[i : i + 500]), ReviewItemRow.resolved_at.is_not(None))
        ).all():
            if ask_id is not None and resolved_at is not None:
                facts[ask_id].ended_at = as_utc(resolved_at)
    label_rows = session.execute(
        select(LabelRow.ask_id, LabelRow.value, LabelRow.source, LabelRow.created_at)
        .join(AskRow, AskRow.id == LabelRow.ask_id)
        .where(AskRow.created_at >= since, AskRow.created_at < until, LabelRow.source != "import")
        .order_by(LabelRow.created_at, LabelRow.id)
    ).all()
    for ask_id, value, source, created_at in label_rows:
        f = facts.get(ask_id)
        if f is None:
            continue
        f.truth = value  # ordered by time: the latest label wins
        if source not in FREE_SOURCES and f.first_human_at is None:
            f.first_human_at = as_utc(created_at)
    spent = session.execute(
        select(LabelRow.created_at, LabelRow.source).where(
            LabelRow.created_at >= since, LabelRow.created_at < until, LabelRow.source != "import"
        )
    ).all()
    return list(facts.values()), [(as_utc(c), s) for c, s in spent]


def _fill(point: Point, facts: Iterable[_AskFacts], labels: Iterable[tuple[dt.datetime, str]],
          now: dt.datetime) -> None:
    waits: list[float] = []
    resolutions: list[float] = []
    for f in facts:
        point.asks += 1
        if f.decision == "escalate":
            point.escalated += 1
            resolutions.append(f.resolution_s(now))
            if f.first_human_at is not None:
                point.human_answered += 1
                waits.append(max(0.0, (f.first_human_at - f.created_at).total_seconds()))
            elif f.outcome == Outcome.REJECTED.value:
                point.human_rejected += 1
            elif f.outcome == Outcome.CANCELLED.value:
                point.human_cancelled += 1
            else:
                point.human_waiting += 1
        elif f.decision == "answer":
            point.ai_answered += 1
        if f.truth is not None and f.guess:
            right = normalise_label(f.guess) == normalise_label(f.truth)
            point.labelled += 1
            point.correct += right
            if f.decision == "answer":
                point.auto_labelled += 1
                point.auto_correct += right
    by_source: Counter[str] = Counter()
    for _, source in labels:
        by_source[source] += 1
    point.labels_by_source = dict(sorted(by_source.items()))
    point.labels_spent = sum(n for s, n in by_source.items() if s not in FREE_SOURCES)
    point.coverage = _ratio(point.ai_answered, point.asks)
    point.escalation_rate = _ratio(point.escalated, point.asks)
    point.accuracy = _ratio(point.correct, point.labelled)
    point.auto_accuracy = _ratio(point.auto_correct, point.auto_labelled)
    point.human_answer_p50_s, point.human_answer_p95_s = _p50_p95(waits)
    point.human_resolution_p50_s, point.human_resolution_p95_s = _p50_p95(resolutions)


def _p50_p95(values: list[float]) -> tuple[float | None, float | None]:
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return (round(p50, 3) if p50 is not None else None, round(p95, 3) if p95 is not None else None)


def confusion(facts: Iterable[_AskFacts], *, top: int = 12) -> Confusion:
    pairs = [(f.truth, f.guess) for f in facts if f.skill == "identify" and f.truth and f.guess]
    by_truth: Counter[str] = Counter(t for t, _ in pairs)
    # The most frequent classes on either side, so a class the AI keeps guessing wrongly shows up too.
    seen: Counter[str] = by_truth + Counter(g for _, g in pairs)
    keep = sorted((c for c, _ in seen.most_common(max(1, top))), key=lambda c: (-seen[c], c))
    keep_set = set(keep)
    fold = any(t not in keep_set or g not in keep_set for t, g in pairs)
    classes = keep + ([OTHER] if fold else [])
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for t, g in pairs:
        ti = index.get(t, index.get(OTHER, 0))
        gi = index.get(g, index.get(OTHER, 0))
        matrix[ti][gi] += 1
    # Precision and recall by exact class, before the folding.
    tp: Counter[str] = Counter()
    guessed: Counter[str] = Counter()
    for t, g in pairs:
        guessed[g] += 1
        if normalise_label(t) == normalise_label(g):
            tp[t] += 1
    per_class = [
        {"label": c, "support": by_truth[c], "recall": _ratio(tp[c], by_truth[c]),
         "precision": _ratio(tp[c], guessed[c]), "guessed": guessed[c]}
        for c in keep
    ]
    return Confusion(classes=classes, matrix=matrix, per_class=per_class, total=len(pairs))


def group_figures(
    session: Session, since: dt.datetime, until: dt.datetime, guarantees: Mapping[str, Guarantee] | None = None,
) -> list[GroupFigures]:
    """Per group: identify asks in [since, until) and their audit verdicts, with the serving guarantees."""
    rows = session.execute(
        select(AskRow.result, AskRow.decision, AskRow.audit, AskRow.audit_correct)
        .where(AskRow.created_at >= since, AskRow.created_at < until, AskRow.skill == "identify")
    ).all()
    out: dict[str, GroupFigures] = {g: GroupFigures(g) for g in (guarantees or {})}
    for result, decision, audit, audit_correct in rows:
        group = (result or {}).get("group")
        if not group:
            continue  # decided before asks had groups
        f = out.setdefault(str(group), GroupFigures(str(group)))
        f.asks += 1
        if decision == "answer":
            f.answered += 1
            if audit and audit_correct is not None:
                f.audit_answered += 1
                f.audit_wrong += not audit_correct
        elif decision == "escalate":
            f.escalated += 1
    for f in out.values():
        f.coverage = _ratio(f.answered, f.asks)
        f.escalation_rate = _ratio(f.escalated, f.asks)
        f.error = _ratio(f.audit_wrong, f.audit_answered)
        g = (guarantees or {}).get(f.group)
        if g is not None:
            f.bound, f.calibration_labels, f.labels_to_go, f.guarantee = g.bound, g.labels, g.to_go, g.text
    # Families first, then the catch-alls.
    return sorted(out.values(), key=lambda f: (f.group in ("other", UNKNOWN_GROUP), f.group == UNKNOWN_GROUP, f.group))


def compute_metrics(
    session: Session,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    bucket: str = "auto",
    top_classes: int = 12,
    guarantees: Mapping[str, Guarantee] | None = None,
) -> Metrics:
    """Metrics over [since, until), bucketed; the default window is the last 14 days.

    ``guarantees``: what the serving policy certifies per group (``ServingModel.guarantees``), shown per group.
    """
    until = as_utc(until) if until else utcnow()
    since = as_utc(since) if since else until - dt.timedelta(days=14)
    if since >= until:
        raise BadInput("'since' must be before 'until'")
    if bucket == "auto":
        bucket = choose_bucket(since, until)
    if bucket not in BUCKETS:
        raise BadInput(f"unknown bucket {bucket!r}: use hour, day, week or auto")
    if (until - since) / BUCKETS[bucket] > 2000:
        raise BadInput("that window has too many buckets: choose a larger bucket or a shorter window")
    facts, labels = _load(session, since, until)
    by_bucket: dict[dt.datetime, list[_AskFacts]] = defaultdict(list)
    for f in facts:
        by_bucket[bucket_start(f.created_at, bucket)].append(f)
    labels_by_bucket: dict[dt.datetime, list[tuple[dt.datetime, str]]] = defaultdict(list)
    for lab in labels:
        labels_by_bucket[bucket_start(lab[0], bucket)].append(lab)
    points: list[Point] = []
    now = utcnow()
    start = bucket_start(since, bucket)
    while start < until:
        p = Point(start=start)
        _fill(p, by_bucket.get(start, []), labels_by_bucket.get(start, []), now)
        points.append(p)
        start = start + BUCKETS[bucket]
    totals = Point(start=since)
    _fill(totals, facts, labels, now)
    return Metrics(since=since, until=until, bucket=bucket, points=points, totals=totals,
                   confusion=confusion(facts, top=top_classes),
                   groups=group_figures(session, since, until, guarantees))


def metrics_between(
    db: Database, since: str | None = None, until: str | None = None, *, bucket: str = "auto", top_classes: int = 12,
    guarantees: Mapping[str, Guarantee] | None = None,
) -> Metrics:
    """``compute_metrics`` over a window written as ``parse_when`` reads it (a date, an ISO time, or ``7d``)."""
    with db.session() as s:
        return compute_metrics(s, since=parse_when(since), until=parse_when(until), bucket=bucket,
                               top_classes=top_classes, guarantees=guarantees)


# -- plots (PNG, for reports) ------------------------------------------------------------------------------

PLOTS = ("accuracy", "coverage", "answer-time", "labels", "confusion", "overview")


def plot_png(metrics: Metrics, name: str, *, dpi: int = 110) -> bytes:
    """One chart as PNG bytes (matplotlib, Agg backend: no display needed)."""
    if name not in PLOTS:
        raise BadInput(f"unknown plot {name!r}: choose one of {', '.join(PLOTS)}")
    import matplotlib  # slow to import: only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow to import: only plots need it

    if name == "overview":
        fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
        for ax, which in zip(axes.flat, ("accuracy", "coverage", "answer-time", "labels"), strict=True):
            _draw(ax, metrics, which)
    elif name == "confusion":
        n = max(1, len(metrics.confusion.classes))
        fig, ax = plt.subplots(figsize=(min(4 + n * 0.55, 14), min(3.5 + n * 0.5, 12)))
        _draw(ax, metrics, name)
    else:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        _draw(ax, metrics, name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def _draw(ax: Any, m: Metrics, name: str) -> None:
    xs = [p.start for p in m.points]

    def series(attr: str, scale: float = 1.0) -> list[float]:
        out = []
        for p in m.points:
            v = getattr(p, attr)
            out.append(float("nan") if v is None else float(v) * scale)
        return out

    if name == "accuracy":
        ax.plot(xs, series("accuracy", 100), marker="o", ms=3, label="all labelled asks")
        ax.plot(xs, series("auto_accuracy", 100), marker="o", ms=3, label="answered without a human")
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax.set_title(f"Accuracy against labels ({_of(m.totals.labelled, 'labels')})")
        ax.legend(loc="lower right", fontsize=8)
    elif name == "coverage":
        ax.plot(xs, series("coverage", 100), marker="o", ms=3, label="coverage: answered without a person")
        ax.plot(xs, series("escalation_rate", 100), marker="o", ms=3, label="escalation rate")
        ax.set_ylim(0, 105)
        ax.set_ylabel("% of asks")
        ax.set_title(f"Coverage and escalation ({_of(m.totals.asks, 'asks')})")
        ax.legend(loc="center right", fontsize=8)
    elif name == "answer-time":
        ax.plot(xs, series("human_resolution_p50_s"), marker="o", ms=3, label="median")
        ax.plot(xs, series("human_resolution_p95_s"), marker="o", ms=3, label="p95")
        ax.set_ylabel("seconds")
        t = m.totals
        ax.set_title(f"Human time to resolution ({_of(t.escalated, 'escalations')}: {t.human_answered} answered, "
                     f"{t.human_rejected} can't tell, {t.human_cancelled} cancelled, {t.human_waiting} waiting)",
                     fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    elif name == "labels":
        sources = sorted({s for p in m.points for s in p.labels_by_source if s not in FREE_SOURCES})
        bottom = [0.0] * len(xs)
        width = _bar_width(m)
        for s in sources:
            vals = [float(p.labels_by_source.get(s, 0)) for p in m.points]
            ax.bar(xs, vals, width=width, bottom=bottom, label=s, align="edge")
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_ylabel("labels")
        from matplotlib.ticker import MaxNLocator  # slow to import: only plots need it

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no fractional ticks
        ax.set_title(f"Labels spent (total {m.totals.labels_spent})")
        if sources:
            ax.legend(loc="upper left", fontsize=8)
    elif name == "confusion":
        c = m.confusion
        if c.classes:
            im = ax.imshow(c.matrix, cmap="Blues")
            ax.set_xticks(range(len(c.classes)), [_short(x) for x in c.classes], rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(len(c.classes)), [_short(x) for x in c.classes], fontsize=8)
            peak = max((v for row in c.matrix for v in row), default=0)
            for i, row in enumerate(c.matrix):
                for j, v in enumerate(row):
                    if v:
                        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                                color="white" if v > peak / 2 else "black")
            ax.figure.colorbar(im, ax=ax, fraction=0.04)
        ax.set_xlabel("AI guess")
        ax.set_ylabel("label")
        ax.set_title(f"Confusion ({c.total} labelled asks)")
    if name != "confusion":
        import matplotlib.dates as mdates  # slow to import: only plots need it

        fmt = mdates.DateFormatter("%H:%M" if m.bucket == "hour" else "%b %d")  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(fmt)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(axis="x", labelsize=8, rotation=30)


def _of(n: int, noun: str) -> str:
    """'of 3 labels — too few to trust' under MIN_SAMPLE: a figure says what it rests on."""
    return f"of {n} {noun}" + (f" — under {MIN_SAMPLE}, may be chance" if 0 < n < MIN_SAMPLE else "")


def _bar_width(m: Metrics) -> float:
    return BUCKETS[m.bucket] / dt.timedelta(days=1) * 0.8


def _short(label: str, n: int = 18) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"
