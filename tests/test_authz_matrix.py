"""The authorisation matrix over every endpoint in the OpenAPI schema (new endpoints join automatically).

* wearer B never reads (or changes) anything of wearer A's: asks, frames, memory, answers;
* a reviewer reads only the review items (and their asks) they hold — offered to them or claimed — and only
  redacted frames; answered, released or someone else's items are closed to them; they change nothing of an
  ask they do not hold (a route correction retrains the router for everyone: the ask's wearer or an operator);
* anonymous callers see nobody's data;
* an operator's successful state-changing requests are all in the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from privacy_util import add_device, face_photo, product_photo, system_for
from sqlalchemy import select

from lookloop.catalog import GroceryDataset
from lookloop.loop.policies import FixedThreshold
from lookloop.privacy.tables import AuditRow

WRITES = {"post", "put", "patch", "delete"}
SECRET_NOTE = "my-locker-code-4711"


@dataclass
class World:
    client: TestClient
    system: Any
    ops: list[tuple[str, str]]  # (method, path template)
    bodies: dict[tuple[str, str], dict[str, Any]]  # a valid JSON body for each write that takes one
    tokens: dict[str, str]
    a_ask: str  # answered, wearer A
    a_queued: str  # escalated (in the review queue), wearer A, a face photo
    a_upload: bytes
    a_device: str
    b_device: str


def _h(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, model_dir: Path,
          grocery: GroceryDataset) -> Iterator[World]:
    from lookloop.humans.accounts import Accounts
    from lookloop.memory.store import MemoryStore
    from lookloop.server.app import create_app

    system = system_for(tmp_path_factory.mktemp("authz"), data_dir, model_dir, grocery, redact_text="sync",
                        rate_limit_device_per_min=0, rate_limit_account_per_min=0, rate_limit_anonymous_per_min=0)
    a_dev, _, a_tok = add_device(system, "ann")
    b_dev, _, b_tok = add_device(system, "bob")
    accounts = Accounts(system.db)
    accounts.add_account("rev", "reviewer", "rev-password-1")
    accounts.add_account("op", "operator", "op-password-1")
    tokens = {"a": a_tok, "b": b_tok, "reviewer": accounts.login("rev", "rev-password-1")[0],
              "operator": accounts.login("op", "op-password-1")[0]}
    app = create_app(system=system, warm=False)
    with TestClient(app) as client:
        def ask(token: str, image: bytes) -> str:
            r = client.post("/v1/asks", data={"question": "what is this?", "skill": "identify"},
                            files={"image": ("x.jpg", image)}, headers=_h(token))
            assert r.status_code == 200, r.text
            return str(r.json()["id"])

        system.policy = FixedThreshold(0.0)
        a_ask = ask(a_tok, product_photo(grocery, "Banana"))
        ask(b_tok, product_photo(grocery, "Cucumber"))
        system.policy = FixedThreshold(1.0)
        upload = face_photo()
        a_queued = ask(a_tok, upload)
        system.policy = FixedThreshold(0.0)
        MemoryStore(system.db).add(device_id=a_dev, note=SECRET_NOTE)
        schema = client.get("/openapi.json").json()
        # Event streams never end: they are covered by the stream tests, not here.
        ops = [(m, p) for p, item in schema["paths"].items() for m, op in item.items()
               if m in WRITES | {"get"} and not _streams(p, op)]
        bodies = {(m, p): _example_body(schema, op) for p, item in schema["paths"].items()
                  for m, op in item.items() if m in WRITES}
        yield World(client, system, ops, bodies, tokens, a_ask, a_queued, upload, a_dev, b_dev)
    system.db.dispose()


def _streams(path: str, op: dict[str, Any]) -> bool:
    responses = op.get("responses", {}).values()
    return path.endswith("/sse") or any("text/event-stream" in (r.get("content") or {}) for r in responses)


def _example_body(schema: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """A valid JSON body from the operation's schema: its required fields, filled plausibly."""
    ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema") or {}).get("$ref")
    if not ref:
        return {}
    model = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    body: dict[str, Any] = {}
    for name in model.get("required", []):
        prop = model["properties"][name]
        pattern = re.match(r"^\^\(?([\w-]+)", prop.get("pattern", ""))
        body[name] = (prop["enum"][0] if "enum" in prop else pattern.group(1) if pattern
                      else 1 if prop.get("type") in ("integer", "number") else "Banana")
    return body


def _fill(path: str, ask_id: str, item_id: str = "does-not-exist") -> str:
    path = path.replace("{ask_id}", ask_id).replace("{item_id}", item_id)
    return re.sub(r"\{[^}]+\}", "does-not-exist", path)


def test_the_schema_has_the_endpoints(world: World) -> None:
    paths = {p for _, p in world.ops}
    assert "/v1/asks/{ask_id}" in paths and "/v1/me/data" in paths and "/v1/privacy/audit" in paths


def test_wearer_b_never_touches_wearer_a(world: World) -> None:
    leaks = []
    for method, path in world.ops:
        if "{ask_id}" not in path:
            continue
        for ask_id in (world.a_ask, world.a_queued):
            r = world.client.request(method.upper(), _fill(path, ask_id), headers=_h(world.tokens["b"]),
                                     json=world.bodies.get((method, path), {}) if method in WRITES else None)
            if r.status_code < 300:
                leaks.append(f"{method.upper()} {path} as B on A's ask -> {r.status_code}")
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("who", ["b", None])
def test_listings_never_show_someone_elses_data(world: World, who: str | None) -> None:
    leaks = []
    for method, path in world.ops:
        if method != "get" or "{" in path:
            continue
        r = world.client.get(path, headers=_h(world.tokens[who] if who else None))
        if r.status_code >= 300:
            continue
        for secret in (world.a_ask, world.a_queued, world.a_device, SECRET_NOTE):
            if secret in r.text:
                leaks.append(f"GET {path} as {who or 'anonymous'} shows {secret[:12]}")
    assert not leaks, "\n".join(leaks)


def test_reviewer_reads_only_queued_asks(world: World) -> None:
    leaks = []
    for method, path in world.ops:
        if method != "get" or "{ask_id}" not in path:
            continue
        r = world.client.get(_fill(path, world.a_ask), headers=_h(world.tokens["reviewer"]))
        if r.status_code < 300:
            leaks.append(f"GET {path} as reviewer on an ask not in the queue -> {r.status_code}")
    assert not leaks, "\n".join(leaks)


def _reviewer_reads(world: World, ask_id: str, item_id: str) -> list[str]:
    """The GET routes about an ask or a review item that answer a reviewer with a 2xx."""
    opened = []
    for method, path in world.ops:
        if method != "get" or ("{ask_id}" not in path and "{item_id}" not in path):
            continue
        r = world.client.get(_fill(path, ask_id, item_id), headers=_h(world.tokens["reviewer"]))
        if r.status_code < 300:
            opened.append(path)
    return opened


def _review_item(world: World, ask_id: str) -> str:
    item = world.system.humans.queue.for_ask(ask_id)
    assert item is not None
    return str(item.id)


def test_reviewer_opens_a_queued_item_only_while_holding_it(world: World) -> None:
    item_id = _review_item(world, world.a_queued)
    reviewer = _h(world.tokens["reviewer"])
    assert _reviewer_reads(world, world.a_queued, item_id) == [], "a reviewer opened an item nobody offered them"
    claimed = world.client.post(f"/v1/review/items/{item_id}/claim", headers=reviewer)
    assert claimed.status_code == 200, claimed.text
    try:
        held = _reviewer_reads(world, world.a_queued, item_id)
        assert "/v1/review/items/{item_id}" in held and "/v1/review/items/{item_id}/frame" in held
    finally:
        assert world.client.post(f"/v1/review/items/{item_id}/release", headers=reviewer).status_code == 204
    assert _reviewer_reads(world, world.a_queued, item_id) == [], "released, but still open to the reviewer"


def test_reviewer_sees_only_redacted_frames(world: World) -> None:
    item_id = _review_item(world, world.a_queued)
    reviewer = _h(world.tokens["reviewer"])
    assert world.client.post(f"/v1/review/items/{item_id}/claim", headers=reviewer).status_code == 200
    seen_image = False
    try:
        for method, path in world.ops:
            if method != "get" or ("{ask_id}" not in path and "{item_id}" not in path):
                continue
            r = world.client.get(_fill(path, world.a_queued, item_id), headers=reviewer)
            if r.status_code < 300 and r.headers.get("content-type", "").startswith("image/"):
                seen_image = True
                assert r.content != world.a_upload, f"GET {path} showed a reviewer the unredacted frame"
        # Reveal needs the permission, and the refusal is audited too.
        r = world.client.get(f"/v1/privacy/asks/{world.a_queued}/original", headers=reviewer)
        assert r.status_code == 403
    finally:
        world.client.post(f"/v1/review/items/{item_id}/release", headers=reviewer)
    assert seen_image, "a reviewer holding the item should see its (redacted) frame"


def test_an_answered_item_is_closed_to_its_reviewer(world: World, grocery: GroceryDataset) -> None:
    world.system.policy = FixedThreshold(1.0)
    try:
        r = world.client.post("/v1/asks", data={"question": "what is this?", "skill": "identify"},
                              files={"image": ("x.jpg", product_photo(grocery, "Cucumber"))},
                              headers=_h(world.tokens["a"]))
    finally:
        world.system.policy = FixedThreshold(0.0)
    ask_id = r.json()["id"]
    item_id = _review_item(world, ask_id)
    reviewer = _h(world.tokens["reviewer"])
    assert world.client.post(f"/v1/review/items/{item_id}/claim", headers=reviewer).status_code == 200
    r = world.client.post(f"/v1/review/items/{item_id}/answer", json={"action": "answer", "value": "Cucumber"},
                          headers=reviewer)
    assert r.status_code == 200 and r.json()["resolved"], r.text
    assert _reviewer_reads(world, ask_id, item_id) == [], "an answered item stayed open to the reviewer"


def test_reviewer_changes_nothing_of_an_ask_they_do_not_hold(world: World) -> None:
    changed = []
    for method, path in world.ops:
        if method not in WRITES or "{ask_id}" not in path:
            continue
        for ask_id in (world.a_ask, world.a_queued):
            r = world.client.request(method.upper(), _fill(path, ask_id), headers=_h(world.tokens["reviewer"]),
                                     json=world.bodies.get((method, path), {}))
            if r.status_code < 300:
                changed.append(f"{method.upper()} {path} as reviewer -> {r.status_code}")
    assert not changed, "\n".join(changed)


def test_route_corrections_come_from_the_wearer_or_an_operator(world: World) -> None:
    url = f"/v1/asks/{world.a_ask}/route"
    body = {"skill": "identify"}
    expected = {None: 401, "b": 404, "reviewer": 403, "a": 200, "operator": 200}
    got = {who: world.client.post(url, json=body, headers=_h(world.tokens[who] if who else None)).status_code
           for who in expected}
    assert got == expected


def test_operator_writes_are_audited(world: World) -> None:
    done = []
    for method, path in world.ops:
        if method not in WRITES or "/me/" in path or "logout" in path:
            continue
        url = _fill(path, "does-not-exist")
        r = world.client.request(method.upper(), url, headers=_h(world.tokens["operator"]), json={})
        if r.status_code < 300:
            done.append(url)
    r = world.client.post("/v1/privacy/purge", headers=_h(world.tokens["operator"]))
    assert r.status_code == 200
    done.append("/v1/privacy/purge")
    with world.system.db.session() as s:
        audited = {row.target for row in s.scalars(select(AuditRow).where(AuditRow.role == "operator"))}
    missing = [u for u in done if u not in audited]
    assert not missing, f"operator writes without an audit entry: {missing}"
