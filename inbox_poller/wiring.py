"""The composition root: build the object graph the configuration names.

Also the run lock, which keeps one daemon or pass per ledger. The edges that pull in
network libraries are imported where they are built, so commands that never use
them (``status``, ``exports``) do not pay for importing them.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from inbox_poller.archive import Archive
from inbox_poller.config import Config
from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger.store import Store
from inbox_poller.loop.poller import Poller, PollerSettings
from inbox_poller.loop.submitter import Submitter

if TYPE_CHECKING:
    from inbox_poller.imap.mailbox import ImapMailbox
    from inbox_poller.pinpointe.client import PinpointeApi


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


def _settings(config: Config) -> PollerSettings:
    return PollerSettings(
        rules=config.download.host_rules,
        keyword=config.imap.keyword,
        max_download_attempts=config.download.max_attempts,
        sender_policy=config.sender_policy,
    )


def build_mailbox(config: Config) -> ImapMailbox:
    """The IMAP mailbox named by the configuration (not yet connected)."""
    from inbox_poller.imap.mailbox import ImapMailbox

    return ImapMailbox(config.imap, config.imap_password.read(), ca_file=config.imap_ca)


def build_api(config: Config) -> PinpointeApi:
    """The Pinpointe client named by the configuration."""
    from inbox_poller.pinpointe.client import PinpointeApi

    return PinpointeApi(config.pinpointe, config.usertoken.read(), ca_file=config.pinpointe_ca)


def build_poller(
    config: Config, *, downloads: bool = True, stop: threading.Event | None = None
) -> Poller:
    """Wire the mailbox, downloader, ledger and archive named by the configuration."""
    from inbox_poller.download.fetcher import SafeDownloader

    return Poller(
        Store(config.state_path),
        Archive(config.archive_dir),
        _settings(config),
        mailbox=build_mailbox(config),
        downloader=SafeDownloader(config.download, ca_file=config.download_ca, stop=stop)
        if downloads
        else None,
        stop=stop,
    )


def build_submitter(config: Config, store: Store | None = None) -> Submitter:
    """Wire the Pinpointe client and the ledger for submissions."""
    return Submitter(store or Store(config.state_path), build_api(config))
