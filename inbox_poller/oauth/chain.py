"""The refresh-token chain: which refresh token to use, kept durably across rotations.

Microsoft (and any server that rotates refresh tokens) answers a refresh with a new
refresh token and may refuse the old one from then on. The configured source
(``refresh_token_file`` / ``_env``) may be read-only (a systemd credential) and is never
rewritten; instead each rotated token is written at once to ``oauth2-refresh-token.json``
in the state directory (a temporary file, fsync, rename, the directory fsynced; mode
0600), together with a SHA-256 of the configured token the chain started from. So:

* a restart continues with the newest token of the chain, never one already replaced;
* a person who puts a *new* refresh token in the configured place (its digest differs
  from the chain's origin) starts a new chain, and that token wins.

Several processes may use one chain (the daemon, and ``inbox-poller check`` beside it):
:meth:`RefreshChain.locked` holds an ``flock`` on ``oauth2.lock`` around reading the
chain, refreshing and writing, so that a token rotated by one is used by the other.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("inbox_poller.oauth")

CHAIN_FILE = "oauth2-refresh-token.json"
STATUS_FILE = "oauth2-status.json"
LOCK_FILE = "oauth2.lock"


def digest(secret: str) -> str:
    """The SHA-256 of *secret*, as hex (stored; the secret itself is not)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write *data* to *path* atomically and durably, readable by us only (0600).

    A temporary file in the same directory, fsync, rename over *path*, fsync of the
    directory: after a crash *path* holds either the old or the new content.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_json(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in *path*, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("oauth2: ignoring %s: %s", path, exc)
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class ChainState:
    """What ``auth status`` may show about the chain (never the token)."""

    rotated: bool
    rotations: int
    rotated_at: str | None
    origin_matches: bool
    """Whether the stored chain started from the token configured now."""


class RefreshChain:
    """The refresh token to use now, from *configured* or the stored chain in *state_dir*.

    *configured* reads the configured refresh token (``Secret.read``); it is called at
    each :meth:`current`, so a new token put in place is noticed without a restart.
    """

    def __init__(self, configured: Callable[[], str], state_dir: Path) -> None:
        self._configured = configured
        self._state_dir = state_dir
        self._announced_origin: str | None = None

    @property
    def path(self) -> Path:
        return self._state_dir / CHAIN_FILE

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the chain's lock (between processes) for a read-refresh-write."""
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def current(self) -> str:
        """Return the refresh token to use: the chain's newest, or the configured one.

        :raises ConfigError: the configured source cannot be read.
        """
        configured = self._configured()
        origin = digest(configured)
        stored = read_json(self.path)
        if stored is not None and stored.get("origin_sha256") == origin:
            token = stored.get("refresh_token")
            if isinstance(token, str) and token:
                return token
        if stored is not None and self._announced_origin != origin:
            logger.info(
                "oauth2: a new refresh token is configured; it starts a new chain "
                "(the stored, rotated one is no longer used)"
            )
        self._announced_origin = origin
        return configured

    def rotate(self, old: str, new: str, now: datetime) -> None:
        """Keep *new*, which the server gave for *old*, durably, before anything else.

        :raises OSError: it could not be written (the caller must not lose *new*).
        """
        configured = self._configured()
        stored = read_json(self.path) or {}
        origin = digest(configured)
        rotations = stored.get("rotations", 0) if stored.get("origin_sha256") == origin else 0
        record = {
            "version": 1,
            "origin_sha256": origin,
            "refresh_token": new,
            "rotations": int(rotations) + 1,
            "rotated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
            "replaced_sha256": digest(old),
        }
        write_private(self.path, json.dumps(record, indent=1).encode("utf-8"))

    def fingerprint(self) -> str:
        """Changes whenever the token :meth:`current` would return changes."""
        try:
            return digest(self.current())
        except Exception:  # an unreadable source is a state too; current() will say why
            return "unreadable"

    def state(self) -> ChainState:
        stored = read_json(self.path)
        try:
            origin = digest(self._configured())
        except Exception:
            origin = ""
        if stored is None:
            return ChainState(False, 0, None, True)
        matches = stored.get("origin_sha256") == origin
        rotations = int(stored.get("rotations", 0)) if matches else 0
        rotated_at = stored.get("rotated_at") if matches else None
        return ChainState(matches and rotations > 0, rotations, rotated_at, matches)
