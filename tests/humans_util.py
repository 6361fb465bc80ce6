"""Helpers shared by the human-loop tests."""

from __future__ import annotations

from fastapi.testclient import TestClient

from lookloop.catalog import GroceryDataset, LabelledImage
from lookloop.system import Lookloop

# Products outside the small test catalogue: the model cannot place them and asks a human.
UNKNOWN_CLASSES = ("Pineapple", "Ginger", "Brown-Cap-Mushroom")


def unknown_photo(system: Lookloop, grocery: GroceryDataset) -> LabelledImage:
    """The photo of an unknown product the model is least sure of (it escalates under the default policy)."""
    photos = [i for i in grocery.split("val") if i.label in UNKNOWN_CLASSES][::4][:6]
    skill = system.skills()["identify"]
    from lookloop.domain import Ask
    from lookloop.imaging import decode_image

    def confidence(p: LabelledImage) -> float:
        frame = decode_image(p.path.read_bytes(), max_bytes=1 << 40, max_pixels=1 << 40)
        return float(skill.predict(Ask("what is this?", frame)).top[1])  # type: ignore[attr-defined]

    return min(photos, key=confidence)


def credentials(client: TestClient, system: Lookloop) -> tuple[str, str, str]:
    """A device token, a reviewer session token and an operator session token."""
    accounts = system.humans.accounts
    _, device = accounts.add_device("wendy", "test glasses")
    accounts.add_account("rita", "reviewer", "reviewer-pass")
    accounts.add_account("otto", "operator", "operator-pass")
    tokens = []
    for user, pw in (("rita", "reviewer-pass"), ("otto", "operator-pass")):
        r = client.post("/v1/auth/login", json={"username": user, "password": pw})
        assert r.status_code == 200, r.text
        tokens.append(r.json()["token"])
    return device, tokens[0], tokens[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
