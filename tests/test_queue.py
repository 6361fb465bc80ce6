"""The review queue: ordering, locks and their time-out, skips, consensus, the operator tie-break, gold, stats."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import make_settings
from sqlalchemy import select

from lookloop.domain import AskRecord, as_utc, utcnow
from lookloop.errors import BadInput, Conflict, Forbidden
from lookloop.humans.accounts import Accounts, Principal
from lookloop.humans.queue import ReviewQueue
from lookloop.humans.tables import ReviewAnswerRow
from lookloop.store.tables import AskRow
from lookloop.system import Lookloop


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def system(tmp_path: Path, data_dir: Path, model_dir: Path, database_url: str) -> Lookloop:
    s = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url,
                               review_lock_timeout_s=60, review_gold_every=0))
    s.migrate()
    return s


@pytest.fixture
def queue(system: Lookloop) -> ReviewQueue:
    q = system.humans.queue
    q.clock = Clock()
    return q


_accounts: dict[str, Principal] = {}


def reviewer(system: Lookloop, name: str, role: str = "reviewer") -> Principal:
    info, _ = Accounts(system.db).add_account(name, role, "password-" + name)
    return Principal("account", role, account_id=info.id, name=name)


def ask(system: Lookloop, confidence: float, label: str = "Banana") -> AskRecord:
    with system.db.session() as s:
        row = AskRow(device_id="dev-1", question="what is this?", skill="identify", answer_text=f"maybe {label}",
                     confidence=confidence, decision="escalate", result={"label": label},
                     candidates=[[label, confidence], ["Cucumber", 0.1]], outcome="escalated")
        s.add(row)
    return system.get_ask(row.id)


def test_live_items_come_first_then_least_confident(system: Lookloop, queue: ReviewQueue) -> None:
    sure = queue.enqueue_ask(ask(system, 0.45), live=False)
    unsure = queue.enqueue_ask(ask(system, 0.10), live=False)
    live = queue.enqueue_ask(ask(system, 0.49), live=True)
    assert unsure.priority > sure.priority
    assert queue.enqueue_ask(system.get_ask(live.ask_id or "")).id == live.id  # enqueued once
    r = reviewer(system, "rita")
    got = [queue.next(r), queue.next(r), queue.next(r)]
    assert [g.id if g else None for g in got] == [live.id, unsure.id, sure.id]
    assert queue.next(r) is None


def test_two_reviewers_never_hold_the_same_item(system: Lookloop, queue: ReviewQueue) -> None:
    items = {queue.enqueue_ask(ask(system, 0.3)).id for _ in range(3)}
    a, b = reviewer(system, "ann"), reviewer(system, "bob")
    seen = []
    for who in (a, b, a):
        item = queue.next(who)
        assert item is not None
        seen.append(item.id)
    assert sorted(seen) == sorted(items)
    assert queue.next(b) is None
    with pytest.raises(Conflict):
        queue.claim(seen[0], b)


def test_an_abandoned_lock_comes_back_after_the_time_out(system: Lookloop, queue: ReviewQueue) -> None:
    item = queue.enqueue_ask(ask(system, 0.3))
    a, b = reviewer(system, "ann"), reviewer(system, "bob")
    got = queue.next(a)
    assert got is not None and got.id == item.id and got.locked_by == a.account_id
    assert queue.next(b) is None
    assert isinstance(queue.clock, Clock)
    queue.clock.advance(59)
    assert queue.next(b) is None
    queue.clock.advance(2)
    again = queue.next(b)
    assert again is not None and again.id == item.id and again.locked_by == b.account_id
    with pytest.raises(Conflict):  # ann's lock lapsed and bob holds it now
        queue.submit(item.id, a, "answer", "Banana")
    assert queue.submit(item.id, b, "answer", "Banana").resolved


def test_release_and_skip(system: Lookloop, queue: ReviewQueue) -> None:
    first = queue.enqueue_ask(ask(system, 0.1))
    second = queue.enqueue_ask(ask(system, 0.4))
    a, b = reviewer(system, "ann"), reviewer(system, "bob")
    got = queue.next(a)
    assert got is not None and got.id == first.id
    queue.skip(first.id, a)
    other = queue.next(b)
    assert other is not None and other.id == first.id  # a skip hands the item to someone else at once
    queue.release(first.id, b)
    nxt = queue.next(a)
    assert nxt is not None and nxt.id == second.id  # the skipper sees fresh items before the skipped one
    back = queue.next(a)
    assert back is not None and back.id == first.id  # and the skipped one after them
    assert queue.stats(a.account_id)[0].skips == 1


def test_consensus_agreement_tie_break_and_operator(system: Lookloop, queue: ReviewQueue) -> None:
    system.settings.review_consensus = 2
    a, b, c = reviewer(system, "ann"), reviewer(system, "bob"), reviewer(system, "cid")
    op = reviewer(system, "otto", "operator")

    agreed = queue.enqueue_ask(ask(system, 0.2))
    assert agreed.needed == 2
    first = queue.submit(agreed.id, a, "answer", "Banana")
    assert not first.resolved and first.status == "open"
    with pytest.raises(Conflict):
        queue.submit(agreed.id, a, "answer", "Banana")  # one vote each
    done = queue.submit(agreed.id, b, "answer", " banana ")
    assert done.resolved and done.value == "Banana"

    split = queue.enqueue_ask(ask(system, 0.2))
    queue.submit(split.id, a, "answer", "Banana")
    tie = queue.submit(split.id, b, "answer", "Cucumber")
    assert not tie.resolved and tie.item.needed == 3  # another reviewer breaks the tie
    broken = queue.submit(split.id, c, "answer", "Cucumber")
    assert broken.resolved and broken.value == "Cucumber"

    hung = queue.enqueue_ask(ask(system, 0.2))
    queue.submit(hung.id, a, "answer", "Banana")
    queue.submit(hung.id, b, "answer", "Cucumber")
    up = queue.submit(hung.id, c, "reject")
    assert up.status == "operator" and not up.resolved
    assert queue.next(reviewer(system, "dan")) is None  # reviewers no longer see it
    with pytest.raises(Forbidden):
        queue.submit(hung.id, reviewer(system, "eve"), "answer", "Banana")
    claimed = queue.next(op)
    assert claimed is not None and claimed.id == hung.id
    final = queue.submit(hung.id, op, "answer", "Cucumber")
    assert final.resolved and final.value == "Cucumber"

    stats = {s.username: s for s in queue.stats()}
    assert stats["ann"].agreement == pytest.approx(1 / 3, abs=1e-3)  # Banana ✓, Banana ✗, Banana ✗
    assert stats["bob"].agreement == pytest.approx(1.0)  # banana ✓, Cucumber ✓, Cucumber ✓
    assert stats["cid"].agreement == pytest.approx(1 / 2, abs=1e-3)
    assert stats["ann"].items == 3


def test_reject_consensus_resolves_without_a_label(system: Lookloop, queue: ReviewQueue) -> None:
    item = queue.enqueue_ask(ask(system, 0.2))
    seen: list[tuple[str, str | None]] = []
    queue.on_resolved.append(lambda it, value, authors: seen.append((it.id, value)))
    res = queue.submit(item.id, reviewer(system, "ann"), "reject")
    assert res.resolved and res.value is None and seen == [(item.id, None)]


def test_bad_answers_are_refused(system: Lookloop, queue: ReviewQueue) -> None:
    item = queue.enqueue_ask(ask(system, 0.2))
    r = reviewer(system, "ann")
    with pytest.raises(BadInput):
        queue.submit(item.id, r, "answer", "  ")
    with pytest.raises(BadInput):
        queue.submit(item.id, r, "maybe", "Banana")
    with pytest.raises(Forbidden):
        queue.next(Principal("device", "wearer", device_id="dev-1"))


def test_gold_items_are_mixed_in_and_score_reviewers(system: Lookloop, queue: ReviewQueue) -> None:
    system.settings.review_gold_every = 2
    # No trust to earn: gold only every second item (reviewers not trusted yet meet it first, tested below).
    system.settings.trust_min_gold_answers, system.settings.trust_min_gold_accuracy = 0, 0.0
    settled = ask(system, 0.3)
    gold_a = queue.gold_from_ask(settled.id, "Banana")
    gold_b = queue.add_gold(question="what is this?", frame_sha=None, answer="Cucumber")
    for _ in range(4):
        queue.enqueue_ask(ask(system, 0.3), live=False)  # live items would go before gold
    good, bad = reviewer(system, "ann"), reviewer(system, "bob")
    for who, answers in ((good, {gold_a.id: "banana", gold_b.id: "Cucumber"}),
                         (bad, {gold_a.id: "Cucumber", gold_b.id: "Cucumber"})):
        kinds = []
        for _ in range(4):
            item = queue.next(who)
            assert item is not None
            kinds.append(item.kind)
            value = answers.get(item.id, "Banana")
            res = queue.submit(item.id, who, "answer", value)
            if item.kind == "gold":
                assert res.correct == (value.lower() == ("banana" if item.id == gold_a.id else "cucumber"))
                assert res.gold and res.status == "resolved"  # the reply is an escalated item's (consensus 1)
        assert kinds == ["ask", "gold", "ask", "gold"]
    stats = {s.username: s for s in queue.stats()}
    assert stats["ann"].gold_answered == 2 and stats["ann"].gold_accuracy == 1.0
    assert stats["bob"].gold_answered == 2 and stats["bob"].gold_accuracy == 0.5
    assert queue.get(gold_a.id).status == "gold"  # gold never closes
    with pytest.raises(BadInput):
        queue.add_gold(question="q", frame_sha=None, answer=" ")


def test_two_reviewers_answering_one_unclaimed_item_at_once_count_once(system: Lookloop, queue: ReviewQueue) -> None:
    """Both used to win (two answers, two labels, both 'agreed'): now one answer counts, the other is a 409."""
    import threading

    queue.clock = utcnow  # real time: the racing threads share it
    resolved: list[str | None] = []
    queue.on_resolved.append(lambda it, value, authors: resolved.append(value))
    a, b = reviewer(system, "ann"), reviewer(system, "bob")
    for trial in range(6):
        item = queue.enqueue_ask(ask(system, 0.3))
        start = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def answer(who: Principal, value: str, item_id: str = item.id, start: threading.Barrier = start,
                   outcomes: dict[str, object] = outcomes) -> None:
            start.wait()
            try:
                outcomes[who.name] = queue.submit(item_id, who, "answer", value)
            except Conflict as exc:
                outcomes[who.name] = exc

        threads = [threading.Thread(target=answer, args=(a, "Banana")),
                   threading.Thread(target=answer, args=(b, "Cucumber"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [o for o in outcomes.values() if not isinstance(o, Conflict)]
        lost = [o for o in outcomes.values() if isinstance(o, Conflict)]
        assert len(won) == 1 and len(lost) == 1, f"trial {trial}: {outcomes}"
        assert "answered already" in lost[0].message or "holds the lock" in lost[0].message
        with system.db.session() as s:
            answers = s.scalars(select(ReviewAnswerRow).where(ReviewAnswerRow.item_id == item.id)).all()
        assert len(answers) == 1 and answers[0].agreed is True
    assert len(resolved) == 6  # each item settled once, with one label


def test_the_database_keeps_one_answer_per_reviewer_per_item(system: Lookloop, queue: ReviewQueue) -> None:
    """The unique index backs the check in code (a double click, a retry, another worker)."""
    from sqlalchemy.exc import IntegrityError

    item = queue.enqueue_ask(ask(system, 0.3))
    with system.db.session() as s:
        s.add(ReviewAnswerRow(item_id=item.id, account_id="acc-1", action="skip"))
        s.add(ReviewAnswerRow(item_id=item.id, account_id="acc-1", action="skip"))  # skips repeat freely
        s.add(ReviewAnswerRow(item_id=item.id, account_id="acc-1", action="answer", value="Banana"))
    with pytest.raises(IntegrityError), system.db.session() as s:
        s.add(ReviewAnswerRow(item_id=item.id, account_id="acc-1", action="reject"))


def test_answering_needs_the_lock_or_takes_it(system: Lookloop, queue: ReviewQueue) -> None:
    system.settings.review_consensus = 2
    item = queue.enqueue_ask(ask(system, 0.3))
    a, b = reviewer(system, "ann"), reviewer(system, "bob")
    assert queue.claim(item.id, a).locked_by == a.account_id
    with pytest.raises(Conflict, match="holds the lock"):
        queue.submit(item.id, b, "answer", "Banana")  # ann holds it
    assert not queue.submit(item.id, a, "answer", "Banana").resolved  # one of two answers; the lock is freed
    assert queue.submit(item.id, b, "answer", "Banana").resolved  # bob takes the free item as he answers
    with pytest.raises(Conflict, match="answered already"):
        queue.submit(item.id, reviewer(system, "cid"), "answer", "Banana")
    with pytest.raises(Conflict, match="answered already"):
        queue.claim(item.id, reviewer(system, "dan"))


def test_a_reviewer_not_trusted_yet_meets_gold_first_until_trusted(system: Lookloop, queue: ReviewQueue) -> None:
    system.settings.trust_min_gold_answers = 2
    golds = [queue.add_gold(question="what is this?", frame_sha=None, answer="Banana") for _ in range(4)]
    for _ in range(3):
        queue.enqueue_ask(ask(system, 0.3), live=False)
    ann = reviewer(system, "ann")
    shown, preloaded = queue.next(ann), queue.next(ann)  # the page preloads the item behind the one shown
    assert shown is not None and preloaded is not None and shown.kind == preloaded.kind == "gold"
    assert shown.id != preloaded.id
    queue.release(shown.id, ann)
    queue.release(preloaded.id, ann)
    kinds = []
    for value in ("Cucumber", "Banana", "Banana", "Banana"):  # a slip first: below 90% however many follow here
        item = queue.next(ann)
        assert item is not None
        kinds.append(item.kind)
        queue.submit(item.id, ann, "answer", value)
    # 3 right of 4 is below 90%: gold first until none is left, then the waiting items.
    assert kinds == ["gold"] * 4
    item = queue.next(ann)
    assert item is not None and item.kind == "ask"
    assert [(s.trusted, s.gold_to_go) for s in queue.stats(ann.account_id)] == [(False, 6)]  # 9 of 10 is 90%
    assert len(golds) == 4


def test_a_gold_item_looks_like_any_item_to_its_reviewer(system: Lookloop, queue: ReviewQueue) -> None:
    """Gold items used to give themselves away: ask_id None, priority 0.0, no lock, their own created_at."""
    from lookloop.humans.runtime import item_event
    from lookloop.server.schemas.humans import ReviewItemOut

    settled = ask(system, 0.3)
    assert isinstance(queue.clock, Clock)
    queue.clock.advance(3600)  # the gold item is made an hour after its ask
    gold = queue.gold_from_ask(settled.id, "Banana")
    real = queue.enqueue_ask(ask(system, 0.3), live=False)
    ann, bob = reviewer(system, "ann"), reviewer(system, "bob")
    shown = {"gold": item_event(queue.claim(gold.id, ann)), "real": item_event(queue.claim(real.id, ann))}
    assert shown["gold"].keys() == shown["real"].keys() >= ReviewItemOut.model_fields.keys()
    for view in shown.values():
        assert not {"ask_id", "priority", "kind", "gold_answer", "needed", "reason"} & view.keys()
        assert view["status"] == "open" and view["live"] is False and view["lock_expires_at"]
    assert shown["gold"]["created_at"] == as_utc(settled.created_at).isoformat()  # as old as its question
    # Held like any item: open to the reviewer it was handed to, not to others, closed once answered.
    assert queue.held_item(gold.id, ann.account_id or "") is not None
    assert queue.held_item(gold.id, bob.account_id or "") is None
    replies = {kind: queue.submit(item.id, ann, "answer", "Banana") for kind, item in (("gold", gold), ("real", real))}
    assert (replies["gold"].resolved, replies["gold"].status) == (replies["real"].resolved, replies["real"].status)
    assert queue.held_item(gold.id, ann.account_id or "") is None
    with pytest.raises(Conflict, match="you answered this item already"):
        queue.submit(gold.id, ann, "answer", "Banana")


def test_reviewers_claiming_at_once_get_distinct_items_and_none_is_left_out(system: Lookloop,
                                                                           queue: ReviewQueue) -> None:
    """Four reviewers (as if on four workers) call ``next`` at once, twice each, over six items: every claim is a
    different item, and the last two calls find the queue empty rather than an item someone holds (on Postgres
    the claim skips rows another claim has locked instead of waiting for them)."""
    import threading

    queue.clock = utcnow  # real time: the racing threads share it
    items = {queue.enqueue_ask(ask(system, 0.3)).id for _ in range(6)}
    people = [reviewer(system, name) for name in ("ann", "bob", "cat", "dan")]
    start = threading.Barrier(len(people))
    got: list[str | None] = []
    lock = threading.Lock()

    def work(who: Principal) -> None:
        start.wait()
        for _ in range(2):
            item = queue.next(who)
            with lock:
                got.append(item.id if item else None)

    threads = [threading.Thread(target=work, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [g for g in got if g is not None]
    assert len(claimed) == len(set(claimed)) == 6 and set(claimed) == items
    assert got.count(None) == 2
