"""What a hook sees: the event as JSON on stdin, and ``INBOX_POLLER_*`` variables.

The environment is built from scratch, never inherited whole: the daemon's own may hold
secrets (``usertoken_env``, ``password_env``) and ``$CREDENTIALS_DIRECTORY``. Only the
variables in :data:`INHERITED` pass through.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""Variables a hook inherits from the daemon, when set there."""
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PREFIX = "INBOX_POLLER_"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def hook_environment(
    hook: str,
    manifest: Mapping[str, Any],
    *,
    archive_dir: Path,
    manifest_path: Path,
    attempt: int,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the environment of one run of *hook* for one archived export.

    Every scalar of the *manifest* line becomes ``INBOX_POLLER_<KEY>`` (``JOB_ID``,
    ``STAT``, ``SHA256``, ``BYTES``, ``RECORDS``, ...; a null is left out), and
    ``INBOX_POLLER_FILE`` is the payload's absolute path. *attempt* counts from 1.
    """
    source = os.environ if inherited is None else inherited
    env = {name: source[name] for name in INHERITED if name in source}
    env.setdefault("PATH", DEFAULT_PATH)
    for key, value in manifest.items():
        if value is not None and not isinstance(value, dict | list):
            env[PREFIX + key.upper()] = _text(value)
    env[PREFIX + "HOOK"] = hook
    env[PREFIX + "ATTEMPT"] = str(attempt)
    env[PREFIX + "ARCHIVE_DIR"] = str(archive_dir)
    env[PREFIX + "MANIFEST"] = str(manifest_path)
    if isinstance(manifest.get("path"), str):
        env[PREFIX + "FILE"] = str(archive_dir / manifest["path"])
    return env
