"""``python -m lookloop.cli``: the same as the ``lookloop`` command."""

from lookloop.cli import main

main()
