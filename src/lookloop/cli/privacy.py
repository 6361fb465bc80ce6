"""``lookloop privacy …``: purge expired frames, delete a wearer's data, consent, reveal grants, audit log."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import inspect, or_, select

from lookloop.cli._shared import Lookloop, console, fail, open_system
from lookloop.errors import LookloopError
from lookloop.humans.tables import AccountRow, WearerRow
from lookloop.privacy import audit
from lookloop.privacy.retention import purge
from lookloop.privacy.tables import RevealGrantRow

privacy_app = typer.Typer(help="Privacy: retention purge, delete-my-data, consent, reveal grants, audit log.",
                          no_args_is_help=True)


def _wearer_id(system: Lookloop, wearer: str) -> str:
    """A wearer's id from their name or id (a device id with no wearer stands for itself)."""
    with system.db.session() as s:
        if inspect(s.get_bind()).has_table("wearers"):
            found = s.scalar(select(WearerRow.id).where(or_(WearerRow.id == wearer, WearerRow.name == wearer)))
            if found:
                return str(found)
    return wearer


@privacy_app.command("purge")
def purge_cmd() -> None:
    """Delete unredacted originals past their retention and frames kept only for a human answer."""
    try:
        report = purge(open_system(build=False), actor="cli")
    except LookloopError as exc:
        raise fail(exc.message) from None
    console.print(f"purged {report.originals} original(s) and {report.transient_frames} transient frame(s)")


@privacy_app.command("delete-wearer")
def delete_wearer_cmd(
    wearer: Annotated[str, typer.Argument(help="The wearer's name or id (or a device id without a wearer).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete everything a wearer's devices left: episodes, frames, memory, labels, embeddings."""
    system = open_system(build=False)
    wearer_id = _wearer_id(system, wearer)
    if not yes and not typer.confirm(f"Delete all data of wearer {wearer_id}?"):
        raise typer.Exit(1)
    try:
        report = system.deletion.delete_wearer_data(wearer_id, actor="cli", role="operator")
    except (LookloopError, ValueError) as exc:
        raise fail(getattr(exc, "message", str(exc))) from None
    console.print_json(json.dumps(report.as_dict()))


@privacy_app.command("consent")
def consent_cmd(
    wearer: Annotated[str, typer.Argument(help="The wearer's name or id.")],
    store_frames: Annotated[bool | None, typer.Option("--store-frames/--no-store-frames")] = None,
    keep_originals: Annotated[bool | None, typer.Option("--keep-originals/--no-keep-originals")] = None,
    human_review: Annotated[bool | None, typer.Option("--human-review/--no-human-review")] = None,
    training_use: Annotated[bool | None, typer.Option("--training-use/--no-training-use")] = None,
    memory: Annotated[bool | None, typer.Option("--memory/--no-memory")] = None,
) -> None:
    """Show a wearer's consent, or change the fields given."""
    system = open_system(build=False)
    wearer_id = _wearer_id(system, wearer)
    changes = {"store_frames": store_frames, "keep_originals": keep_originals, "human_review": human_review,
               "training_use": training_use, "memory": memory}
    try:
        if any(v is not None for v in changes.values()):
            consent = system.consent.set(wearer_id, **changes)
            audit.record(system.db, actor="cli", role="operator", action="privacy.consent",
                         target=f"wearer:{wearer_id}", **consent.as_dict())
        else:
            consent = system.consent.for_wearer(wearer_id)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print_json(json.dumps({"wearer_id": wearer_id, **consent.as_dict()}))


@privacy_app.command("grant-reveal")
def grant_cmd(
    username: Annotated[str, typer.Argument(help="A reviewer's username.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the permission away.")] = False,
) -> None:
    """Let a reviewer reveal unredacted originals (every reveal is audited)."""
    system = open_system(build=False)
    with system.db.session() as s:
        account = s.scalar(select(AccountRow.id).where(AccountRow.username == username))
        if account is None:
            raise fail(f"no account {username!r}")
        row = s.get(RevealGrantRow, account)
        if revoke and row is not None:
            s.delete(row)
        elif not revoke and row is None:
            s.add(RevealGrantRow(account_id=account, granted_by="cli"))
    audit.record(system.db, actor="cli", role="operator", action="privacy.reveal_grant",
                 target=f"account:{account}", revoked=revoke)
    console.print(f"{username}: reveal permission {'revoked' if revoke else 'granted'}")


@privacy_app.command("audit")
def audit_cmd(
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. privacy.reveal.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Show the newest audit-log entries."""
    table = Table("at", "actor", "role", "action", "target")
    for e in audit.entries(open_system(build=False).db, action=action, limit=limit):
        table.add_row(e.at.isoformat(timespec="seconds"), e.actor, e.role, e.action, e.target)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(privacy_app, name="privacy")
