"""Where the private Courier-IMAP lives, and whether this machine can run it.

Debian's Courier packages conflict with ``dovecot-imapd`` (both provide
``imap-server``), so ``scripts/bootstrap.sh`` never installs them: it downloads them
(``apt-get download``) and unpacks them (``dpkg-deb -x``) into a private prefix, and
installs only their libraries. Nothing is registered with dpkg, so no system service,
user or MTA appears. Courier's authlib has its paths compiled in (``/etc/courier``,
``/usr/lib/courier-authlib``, ``/run/courier``); ``CourierServer`` lays the prefix over
them in a private mount namespace, which needs root (docs/providers.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from inbox_poller.errors import InboxPollerError

PREFIX_ENV = "INBOX_POLLER_COURIER_PREFIX"
"""Names the prefix Courier was unpacked into, when not ``DEFAULT_PREFIX``."""
DEFAULT_PREFIX = Path("/opt/inbox-poller/courier")

PACKAGES = (
    "courier-imap",
    "courier-base",
    "courier-authlib",
    "courier-authdaemon",
    "courier-authlib-userdb",
)
"""The Debian packages unpacked into the prefix (``scripts/bootstrap.sh``)."""

INSTALL_HINT = (
    "run scripts/bootstrap.sh as root (it unpacks Debian's courier-imap beside Dovecot "
    f"into {DEFAULT_PREFIX})"
)

REQUIRED = (
    "usr/bin/imapd",
    "usr/bin/couriertls",
    "usr/sbin/couriertcpd",
    "usr/sbin/makeuserdb",
    "usr/lib/courier/courier/imaplogin",
    "usr/lib/courier/courier-authlib/authdaemond",
    "usr/lib/courier-authlib/libauthuserdb.so.0",
)
"""What a prefix must hold to run a server."""


def find_courier(prefix: Path | None = None) -> Path:
    """Return the unpacked prefix (*prefix*, else ``$INBOX_POLLER_COURIER_PREFIX``, else
    ``DEFAULT_PREFIX``).

    :raises InboxPollerError: it is incomplete, or this process cannot make a private
        mount namespace (not root, or no ``unshare``), naming what to do.
    """
    if prefix is None:
        prefix = Path(os.environ.get(PREFIX_ENV) or DEFAULT_PREFIX)
    missing = [name for name in REQUIRED if not (prefix / name).exists()]
    if missing:
        raise InboxPollerError(
            f"Courier-IMAP is not unpacked in {prefix} (no {missing[0]}); {INSTALL_HINT}"
        )
    if os.geteuid() != 0:
        raise InboxPollerError(
            "the private Courier-IMAP needs root (a private mount namespace lays its "
            "compiled-in paths over /etc, /usr and /run)"
        )
    for tool in ("unshare", "openssl"):
        if shutil.which(tool) is None:
            raise InboxPollerError(
                f"the {tool} command is missing: apt-get install util-linux openssl"
            )
    return prefix
