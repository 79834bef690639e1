"""What every throwaway server of the sandbox does the same way around its start and stop.

Dovecot, Courier-IMAP, PostgreSQL and SeaweedFS each know how to start and stop; a
restart, the cleanup of a directory the server made itself, and the ``with`` block are
built from those two here, once. Nothing here is used in production.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self


class ThrowawayServer(ABC):
    """A server started in a private directory, and removed with it.

    Subclasses set ``_dir`` (None until one is chosen) and ``_owns_dir`` (whether the
    server made that directory, so that cleaning up may delete it).
    """

    _dir: Path | None
    _owns_dir: bool

    @abstractmethod
    def start(self) -> None:
        """Start the server (on a directory and ports kept across restarts)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server; stopping one that is not running does nothing."""

    def restart(self) -> None:
        """Stop and start again on the same directory and ports (what was stored survives)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory (never a directory it refused to use)."""
        self.stop()
        if self._dir is not None and self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # __exit__ will not run; the error already holds the log line
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
