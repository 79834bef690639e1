"""Dovecot's log as a start reads it: the lines written since, and the first failure.

A bad setting or a taken port shows as a `` Fatal: `` or `` Error: `` line in the
instance's log, sometimes while the master keeps running; a start stops waiting at
the first one and reports it.
"""

from __future__ import annotations

import re
from pathlib import Path

_FAILURE_RE = re.compile(r" (Fatal|Error): ")


class LogTail:
    """The lines appended to a log file since this object was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[str]:
        """Return the lines written since (none while the file does not exist)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return []
        return data.decode("utf-8", "replace").splitlines()

    def failure(self) -> str | None:
        """Return the first Fatal or Error line written since, stripped, or None."""
        for line in self.lines():
            if _FAILURE_RE.search(line):
                return line.strip()
        return None
