"""``lookloop ask``: ask about a photo, in process or through a running server (with the glasses SDK)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from lookloop.cli._shared import console, fail, open_system
from lookloop.device.client import ClientError, GlassesClient, Pending
from lookloop.errors import LookloopError
from lookloop.server.schemas.asks import AskOut

# How the SDK records a send that reached the server but got a status worth retrying (503 while it warms up …).
_ANSWERED = re.compile(r"status (\d{3}): (.*)", re.DOTALL)


def ask(
    image: Annotated[Path, typer.Argument(help="A photo (JPEG/PNG/WebP).")],
    question: Annotated[str, typer.Argument(help="The question, e.g. 'what is this?'")] = "what is this?",
    server: Annotated[str | None, typer.Option(help="Ask a running server at this URL instead of in process.")] = None,
    device_id: Annotated[str, typer.Option(help="Device id recorded with the ask.")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole answer as JSON.")] = False,
) -> None:
    """Ask about a photo and print the answer."""
    if not image.is_file():
        raise fail(f"{image} is not a file")
    data = image.read_bytes()
    payload = ask_server(server, data, question) if server else ask_in_process(data, question, device_id)
    if as_json:
        console.print_json(json.dumps(payload))
        return
    answer = payload["answer"]
    for line in answer["hud"]:
        console.print(f"[bold]{line}[/bold]")
    console.print(
        f"[dim]{answer['skill']} · confidence {answer['confidence']:.2f} · {answer['decision']}"
        f" · ask {payload['id']}[/dim]"
    )


def ask_in_process(data: bytes, question: str, device_id: str) -> dict[str, Any]:
    """The ask as the API would return it, answered by a system opened here."""
    try:
        record = open_system().ask(question, data, device_id=device_id)
    except LookloopError as exc:
        raise fail(exc.message) from None
    return AskOut.of(record).model_dump(mode="json")


def ask_server(server: str, data: bytes, question: str) -> dict[str, Any]:
    """The server's answer, asked anonymously through ``GlassesClient``.

    The outbox is a throwaway folder: the command line is not a device, so an ask that could not be
    delivered is reported and dropped rather than kept for a later resend.
    """
    with tempfile.TemporaryDirectory(prefix="lookloop-ask-") as outbox, \
            GlassesClient(server, queue_dir=outbox, timeout=60) as glasses:
        try:
            result = glasses.ask(data, question)
        except ClientError as exc:
            raise fail(f"the server answered {exc.status}: {exc.detail}") from None
        except ValueError as exc:
            raise fail(str(exc)) from None
        if isinstance(result, Pending):
            error = next((i.last_error for i in glasses.queue.pending() if i.key == result.idempotency_key), None)
            answered = _ANSWERED.match(error or "")
            if answered:
                raise fail(f"the server answered {answered[1]}: {answered[2]}")
            raise fail(f"could not reach {server}: {error or 'no answer'}")
        return result.raw


def register(app: typer.Typer) -> None:
    app.command()(ask)
