"""What every command module uses: the consoles, ``fail``, progress bars and the in-process system."""

from __future__ import annotations

from collections.abc import Callable

from rich.progress import Progress, TaskID

from lookloop.bench._common import console, err_console, fail, make_progress
from lookloop.config import Settings, get_settings
from lookloop.system import Lookloop  # the system facade: the one place the CLI names it

__all__ = [
    "Lookloop", "console", "err_console", "fail", "make_progress", "open_system", "open_system_models", "reporter",
]


def open_system(settings: Settings | None = None, *, build: bool = True) -> Lookloop:
    """The in-process system, migrated, with models loaded (and a progress bar while it embeds)."""
    system = Lookloop(settings or get_settings())
    system.migrate()
    if build:
        open_system_models(system)
    return system


def open_system_models(system: Lookloop) -> None:
    """Load the serving model, with a progress bar for each embedding pass."""
    with make_progress() as progress:
        system.build_identify(progress=reporter(progress))


def reporter(progress: Progress) -> Callable[[str, int, int], None]:
    """A ``report(what, done, total)`` callback that draws one bar per ``what`` on ``progress``."""
    tasks: dict[str, TaskID] = {}

    def report(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = progress.add_task(what, total=total)
        progress.update(tasks[what], completed=done, total=total)

    return report
