"""What a hook sees: the event as JSON on stdin, and ``INBOX_POLLER_*`` variables.

The environment is built from scratch, never inherited whole: the daemon's own may hold
secrets (``usertoken_env``, ``password_env``) and ``$CREDENTIALS_DIRECTORY``. Only the
variables in :data:`INHERITED` pass through.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inbox_poller.archive_reader import manifest_object_path

INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
"""Variables a hook inherits from the daemon, when set there."""
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
PREFIX = "INBOX_POLLER_"


@dataclass(frozen=True)
class BucketArchive:
    """Where an S3 archive is (``[archive] url``), as a hook is told: never a credential."""

    bucket: str
    prefix: str
    """No slash at either end; empty for the bucket's top."""
    endpoint_url: str | None = None
    region: str | None = None

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(relative)}".rstrip("/")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def hook_environment(
    hook: str,
    manifest: Mapping[str, Any],
    *,
    archive_dir: Path | None = None,
    manifest_path: Path | None = None,
    bucket: BucketArchive | None = None,
    attempt: int,
    inherited: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the environment of one run of *hook* for one archived export.

    Every scalar of the *manifest* line becomes ``INBOX_POLLER_<KEY>`` (``JOB_ID``,
    ``STAT``, ``SHA256``, ``BYTES``, ``RECORDS``, ...; a null is left out). On a
    directory (*archive_dir*, *manifest_path*) ``INBOX_POLLER_FILE`` is the payload's
    absolute path; on a *bucket*, ``INBOX_POLLER_URL`` is its ``s3://`` URL and
    ``INBOX_POLLER_BUCKET``/``INBOX_POLLER_KEY`` its bucket and key (no local path is
    given: there is none). *attempt* counts from 1.
    """
    source = os.environ if inherited is None else inherited
    env = {name: source[name] for name in INHERITED if name in source}
    env.setdefault("PATH", DEFAULT_PATH)
    for key, value in manifest.items():
        if value is not None and not isinstance(value, dict | list):
            env[PREFIX + key.upper()] = _text(value)
    env[PREFIX + "HOOK"] = hook
    env[PREFIX + "ATTEMPT"] = str(attempt)
    relative = manifest.get("path") if isinstance(manifest.get("path"), str) else None
    if bucket is not None:
        env[PREFIX + "ARCHIVE_URL"] = bucket.url()
        env[PREFIX + "BUCKET"] = bucket.bucket
        if bucket.endpoint_url:
            env[PREFIX + "S3_ENDPOINT_URL"] = bucket.endpoint_url
        if bucket.region:
            env[PREFIX + "S3_REGION"] = bucket.region
        if relative is not None:
            env[PREFIX + "KEY"] = bucket.key(relative)
            env[PREFIX + "URL"] = bucket.url(relative)
            env[PREFIX + "MANIFEST_KEY"] = bucket.key(manifest_object_path(relative))
        return env
    if archive_dir is not None:
        env[PREFIX + "ARCHIVE_DIR"] = str(archive_dir)
        if relative is not None:
            env[PREFIX + "FILE"] = str(archive_dir / relative)
    if manifest_path is not None:
        env[PREFIX + "MANIFEST"] = str(manifest_path)
    return env
