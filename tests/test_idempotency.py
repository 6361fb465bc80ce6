"""Idempotency keys belong to whoever sent them, for one kind of write, and to one request.

Found by a hostile test of the running service: keys were global (another device, or a caller with no token,
that sent wearer A's key got A's ask back; a label whose key another device had used was dropped with a 200),
the same key with another body silently returned the old result, and parallel retries of one key gave 500s.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from fastapi.testclient import TestClient
from privacy_util import add_device, product_photo, system_for
from sqlalchemy import func, select

from lookloop.catalog import GroceryDataset
from lookloop.loop.policies import FixedThreshold
from lookloop.store.tables import AskRow, LabelRow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path,
          grocery: GroceryDataset) -> Iterator[tuple[TestClient, Any, dict[str, dict[str, str]]]]:
    from lookloop.server.app import create_app

    system = system_for(tmp_path_factory.mktemp("idem"), data_dir, model_dir, grocery,
                        rate_limit_device_per_min=0, rate_limit_account_per_min=0, rate_limit_anonymous_per_min=0)
    system.policy = FixedThreshold(0.0)  # every identify ask is answered: no queue in the way
    _, _, a = add_device(system, "ann")
    _, _, b = add_device(system, "bob")
    system.humans.accounts.add_account("op", "operator", "op-password-1")
    op = system.humans.accounts.login("op", "op-password-1")[0]
    auth = {"a": {"Authorization": f"Bearer {a}"}, "b": {"Authorization": f"Bearer {b}"}, "anonymous": {},
            "operator": {"Authorization": f"Bearer {op}"}}
    with TestClient(create_app(system=system, warm=False)) as client:
        yield client, system, auth
    system.db.dispose()


def _ask(client: TestClient, headers: dict[str, str], key: str, image: bytes, question: str = "what is this?") -> Any:
    return client.post("/v1/asks", data={"question": question, "skill": "identify"},
                       files={"image": ("x.jpg", image)}, headers={**headers, "Idempotency-Key": key})


def _count(system: Any, table: Any, *where: Any) -> int:
    with system.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def test_another_caller_never_gets_a_wearers_ask_back(world: Any, grocery: GroceryDataset) -> None:
    client, system, auth = world
    banana = product_photo(grocery, "Banana")
    mine = _ask(client, auth["a"], "shared-key-1", banana)
    assert mine.status_code == 200, mine.text
    for who in ("b", "anonymous", "operator"):
        theirs = _ask(client, auth[who], "shared-key-1", banana)
        assert theirs.status_code == 200, theirs.text
        assert theirs.json()["id"] != mine.json()["id"], f"{who} got wearer A's ask back with A's key"
        assert theirs.json()["device_id"] != mine.json()["device_id"]
    # A's own retry still gets A's ask.
    assert _ask(client, auth["a"], "shared-key-1", banana).json()["id"] == mine.json()["id"]


def test_the_same_key_with_another_request_is_refused(world: Any, grocery: GroceryDataset) -> None:
    client, system, auth = world
    banana, cucumber = product_photo(grocery, "Banana", 1), product_photo(grocery, "Cucumber", 1)
    first = _ask(client, auth["a"], "reused-key-1", banana)
    assert first.status_code == 200, first.text
    before = _count(system, AskRow)
    for other in (_ask(client, auth["a"], "reused-key-1", cucumber),
                  _ask(client, auth["a"], "reused-key-1", banana, question="how much is this?")):
        assert other.status_code == 422, other.text
        assert "Idempotency-Key" in other.json()["detail"] and "different" in other.json()["detail"]
    assert _count(system, AskRow) == before


def test_a_label_is_not_dropped_because_another_device_used_its_key(world: Any, grocery: GroceryDataset) -> None:
    client, system, auth = world
    a_ask = _ask(client, auth["a"], "a-ask-for-label", product_photo(grocery, "Banana", 2)).json()["id"]
    b_ask = _ask(client, auth["b"], "b-ask-for-label", product_photo(grocery, "Granny-Smith", 0)).json()["id"]
    for who, ask_id in (("a", a_ask), ("b", b_ask)):
        r = client.post(f"/v1/asks/{ask_id}/labels", json={"value": "Banana", "source": "wearer"},
                        headers={**auth[who], "Idempotency-Key": "label-key-1"})
        assert r.status_code == 200, r.text
    assert _count(system, LabelRow, LabelRow.ask_id == b_ask) == 1, "B's label was dropped: A had used its key"
    # A retry is applied once; the same key on another label is refused.
    again = client.post(f"/v1/asks/{b_ask}/labels", json={"value": "Banana", "source": "wearer"},
                        headers={**auth["b"], "Idempotency-Key": "label-key-1"})
    assert again.status_code == 200 and _count(system, LabelRow, LabelRow.ask_id == b_ask) == 1
    other = client.post(f"/v1/asks/{b_ask}/labels", json={"value": "Cucumber", "source": "wearer"},
                        headers={**auth["b"], "Idempotency-Key": "label-key-1"})
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]


def test_parallel_retries_of_one_key_store_one_ask_and_all_get_it(world: Any, grocery: GroceryDataset) -> None:
    client, system, auth = world
    banana = product_photo(grocery, "Granny-Smith", 1)
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: _ask(client, auth["b"], "parallel-key-1", banana), range(10)))
    assert [r.status_code for r in replies] == [200] * 10, [r.text[:120] for r in replies]
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 1
    assert _count(system, AskRow, AskRow.id.in_(ids)) == 1


def test_a_racing_writer_in_another_process_loses_cleanly(database_url: str, tmp_path: Path, data_dir: Path,
                                                          model_dir: Path) -> None:
    """Across processes the receipt's primary key decides: the loser's write rolls back and it answers with
    the winner's result (Postgres and SQLite)."""
    from lookloop.store import idempotency
    from lookloop.system import Lookloop

    system = Lookloop(make_settings(tmp_path, data_dir, model_dir, database_url=database_url))
    system.migrate()
    key = idempotency.Key("device:dev-1", "race-1")
    request = idempotency.Request("ask", key, idempotency.fingerprint(question="q"))

    def write(ask_id: str) -> str:
        with system.db.session() as s:
            s.add(AskRow(id=ask_id, device_id="dev-1", question="q"))
            request.claim(s, ask_id)
        return ask_id

    def apply() -> str:
        write("winner")  # another process commits the same key between our look and our commit
        return write("loser")

    assert idempotency.once(system.db, request, apply, lambda done: done) == "winner"
    with system.db.session() as s:
        assert sorted(s.scalars(select(AskRow.id))) == ["winner"]
    other = idempotency.Request("ask", key, idempotency.fingerprint(question="another"))
    with pytest.raises(Exception, match="different ask request"):
        idempotency.once(system.db, other, lambda: write("third"), lambda done: done)
    with pytest.raises(ValueError):
        idempotency.Key("anonymous", "k")  # a key needs someone to belong to
    assert idempotency.scoped(None, "k") is None
    system.db.dispose()
