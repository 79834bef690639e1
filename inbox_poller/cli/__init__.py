"""The command line: ``inbox-poller`` (the console script) and ``python -m inbox_poller``."""

from inbox_poller.cli.program import main

__all__ = ["main"]
