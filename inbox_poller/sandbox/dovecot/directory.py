"""The instance directory of a throwaway Dovecot: claimed, laid out, reachable by mail.

One directory holds a whole instance (``docs/dovecot.md``): the config, Dovecot's
``run/`` and ``state/`` directories, ``log/``, a certificate from ``localca`` in
``ssl/``, the passwd-file and the sdbox mail store under ``mail/<user>``. As root, mail
is accessed as Debian's ``mail`` user, so that user must be able to pass through the
directory and own the mail store.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import localca
from inbox_poller.sandbox.dovecot.config import MAIL_GID, MAIL_UID, write_users


def claim_directory(directory: Path | None) -> Path:
    """Return the instance directory, created if needed (a new temporary one for None).

    :raises InboxPollerError: when it holds files but is no Dovecot instance directory,
        so that nothing of someone else's is ever used, or deleted at cleanup.
    """
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="inbox-poller-dovecot-"))
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()) and not (directory / "dovecot.conf").exists():
        raise InboxPollerError(
            f"{directory} is neither empty nor a Dovecot instance directory; refusing to use it"
        )
    return directory


def prepare_directory(directory: Path, user: str, password: str) -> localca.LocalCA:
    """Lay out the claimed *directory* for one instance with the test *user*; return its CA.

    ``run/`` is emptied: whatever a crashed instance left there is stale (the caller
    has made sure no instance runs).

    :raises InboxPollerError: as root, when the mail user cannot reach *directory*.
    """
    is_root = os.geteuid() == 0
    if is_root:
        # mkdtemp makes 0700; the mail user must be able to pass through
        directory.chmod(0o711)
        blocked = unreachable_ancestor(directory, MAIL_UID, MAIL_GID)
        if blocked is not None:
            raise InboxPollerError(
                f"the mail user (uid {MAIL_UID}) cannot reach {directory}: {blocked} is not "
                "searchable; use a directory under the system temporary directory"
            )
    for sub in ("run", "state", "log"):
        (directory / sub).mkdir(exist_ok=True)
    run = directory / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    mail_home = directory / "mail" / user
    mail_home.mkdir(parents=True, exist_ok=True)
    if is_root:
        for path in (directory / "mail", mail_home):
            os.chown(path, MAIL_UID, MAIL_GID)
            path.chmod(0o700)
    ca = localca.make_local_ca(directory / "ssl")
    write_users(directory, user, password, mail_home)
    return ca


def unreachable_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """Return the first directory on *path* that *uid* cannot search, if any.

    The imap process keeps the supplementary group 0, so group bits of a
    root-owned directory count too (docs/dovecot.md, fix 3).
    """
    for directory in [path, *path.parents]:
        mode = directory.stat()
        if mode.st_uid == uid and mode.st_mode & stat.S_IXUSR:
            continue
        if mode.st_gid in (gid, 0) and mode.st_mode & stat.S_IXGRP:
            continue
        if mode.st_mode & stat.S_IXOTH:
            continue
        return directory
    return None
