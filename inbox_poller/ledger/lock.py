"""One process per ledger: the lock file beside it that ``run`` holds and ``status`` reads."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inbox_poller.errors import InboxPollerError


def _lock_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".lock")


@contextmanager
def run_lock(state_path: Path) -> Iterator[None]:
    """Hold an exclusive lock next to the ledger: one pass or daemon per state."""
    lock_path = _lock_path(state_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InboxPollerError(
                f"another inbox-poller is already running on {state_path} (lock {lock_path})"
            ) from None
        yield
    finally:
        os.close(fd)


def daemon_running(state_path: Path) -> bool:
    """Return whether a daemon or pass holds the lock next to the ledger."""
    try:
        fd = os.open(_lock_path(state_path), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
