"""Where PostgreSQL's server programs are: Debian's versioned directory, or PATH.

Debian keeps ``postgres`` and ``initdb`` out of PATH, in ``/usr/lib/postgresql/<major>/bin``
(``postgresql-15`` on Debian 12); the newest major installed is used.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from inbox_poller.errors import InboxPollerError

INSTALL_HINT = "apt-get install -y postgresql"
"""The command that provides PostgreSQL's server programs on Debian and Ubuntu."""

DEBIAN_ROOT = Path("/usr/lib/postgresql")
PROGRAMS = ("postgres", "initdb")


def find_bindir(root: Path = DEBIAN_ROOT, search_path: str | None = None) -> Path:
    """Return the directory holding ``postgres`` and ``initdb``.

    The newest ``<root>/<major>/bin`` that holds both wins; otherwise the directory of
    ``postgres`` on *search_path* (default: PATH).

    :raises InboxPollerError: naming the install command when neither has them.
    """
    majors = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.isdigit() and _has_programs(entry / "bin"):
                majors.append((int(entry.name), entry / "bin"))
    if majors:
        return max(majors)[1]
    found = shutil.which("postgres", path=search_path)
    if found is not None and _has_programs(Path(found).parent):
        return Path(found).parent
    raise InboxPollerError(
        f"PostgreSQL's server programs were not found (in {root}/<major>/bin or on "
        f"{'PATH' if search_path is None else search_path}); install them with: {INSTALL_HINT}"
    )


def _has_programs(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in PROGRAMS)
