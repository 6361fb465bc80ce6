"""``lookloop users …``, ``lookloop devices …`` and ``lookloop review …``: the people around the loop."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lookloop.cli._shared import console, fail, open_system
from lookloop.errors import LookloopError
from lookloop.humans.runtime import Humans

users_app = typer.Typer(help="Reviewer and operator accounts.", no_args_is_help=True)
devices_app = typer.Typer(help="Wearers' devices and their tokens.", no_args_is_help=True)
review_app = typer.Typer(help="The review queue.", no_args_is_help=True)


def _humans() -> Humans:
    return open_system(build=False).humans


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Username.")],
    role: Annotated[str, typer.Option(help="reviewer or operator.")] = "reviewer",
    password: Annotated[str | None, typer.Option(help="Password (generated and printed when left out).")] = None,
) -> None:
    """Create an account."""
    try:
        account, pw = _humans().accounts.add_account(name, role, password)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"created {account.role} [bold]{account.username}[/bold]")
    if password is None:
        console.print(f"password: [bold]{pw}[/bold]  (shown once)")


@users_app.command("list")
def users_list() -> None:
    """List accounts."""
    table = Table("username", "role", "disabled", "created")
    for a in _humans().accounts.list_accounts():
        table.add_row(a.username, a.role, "yes" if a.disabled else "", a.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="Username.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, help="The new password.")],
) -> None:
    """Set an account's password (signs out its sessions)."""
    try:
        _humans().accounts.set_password(name, password)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"password changed for {name}")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="Username.")],
                  enable: Annotated[bool, typer.Option(help="Enable instead.")] = False) -> None:
    """Disable (or --enable) an account."""
    try:
        _humans().accounts.set_disabled(name, not enable)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"{name} {'enabled' if enable else 'disabled'}")


@devices_app.command("add")
def devices_add(
    wearer: Annotated[str, typer.Option(help="The wearer the device belongs to (created when new).")],
    name: Annotated[str, typer.Option(help="A name for the device.")] = "glasses",
) -> None:
    """Register a device and print its token (once: only its hash is kept)."""
    try:
        device, token = _humans().accounts.add_device(wearer, name)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"device [bold]{device.id}[/bold] for wearer {device.wearer}")
    console.print(f"token: [bold]{token}[/bold]  (shown once)")


@devices_app.command("list")
def devices_list() -> None:
    """List devices."""
    table = Table("id", "name", "wearer", "revoked", "created")
    for d in _humans().accounts.list_devices():
        table.add_row(d.id, d.name, d.wearer, "yes" if d.revoked else "", d.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@devices_app.command("revoke")
def devices_revoke(device_id: Annotated[str, typer.Argument(help="Device id.")]) -> None:
    """Revoke a device's token."""
    try:
        _humans().accounts.revoke_device(device_id)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"revoked {device_id}")


@review_app.command("stats")
def review_stats() -> None:
    """Per-reviewer stats and the queue's size."""
    humans = _humans()
    table = Table("reviewer", "items", "skips", "s/item", "agreement", "gold", "gold acc.")
    for r in humans.queue.stats():
        table.add_row(r.username, str(r.items), str(r.skips),
                      f"{r.seconds_per_item:.1f}" if r.seconds_per_item is not None else "–",
                      f"{r.agreement:.0%}" if r.agreement is not None else "–", str(r.gold_answered),
                      f"{r.gold_accuracy:.0%}" if r.gold_accuracy is not None else "–")
    console.print(table)
    console.print(" · ".join(f"{k} {v}" for k, v in humans.queue.counts().items()))


@review_app.command("gold")
def review_gold(
    ask_id: Annotated[str, typer.Argument(help="A settled ask to turn into a gold item.")],
    answer: Annotated[str | None, typer.Option(help="The known answer (default: the ask's resolved label).")] = None,
) -> None:
    """Make a gold item from an ask."""
    try:
        item = _humans().queue.gold_from_ask(ask_id, answer)
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"gold item {item.id}")


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(devices_app, name="devices")
    app.add_typer(review_app, name="review")
