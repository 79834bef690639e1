"""What ``inbox-poller migrate`` moves, decided from the two configurations.

The source is the configuration the daemon runs with (``-c``); the target is the one it
will run with afterwards (``--to``). Each half moves only when it differs: the ledger
from ``[state] path`` to ``[state] url``, the archive from ``[archive] dir`` to
``[archive] url``. ``--ledger-only`` and ``--archive-only`` narrow it. docs/migration.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from inbox_poller.config import Config
from inbox_poller.errors import UsageError


@dataclass(frozen=True)
class Plan:
    """The halves to move, and where from and to."""

    ledger: bool
    archive: bool
    source_ledger: Path
    target_url: str | None
    source_archive: Path
    target_archive: str | None


def plan(source: Config, target: Config, *, ledger_only: bool, archive_only: bool) -> Plan:
    """Decide what moves from *source* to *target*.

    :raises UsageError: nothing to move, or a direction this command does not go.
    """
    if ledger_only and archive_only:
        raise UsageError("--ledger-only and --archive-only cannot be used together")
    if source.state_url is not None:
        ledger = False
        if ledger_only:
            raise UsageError(
                f"the source ledger is already PostgreSQL ({source.state_url}): "
                "migrate moves a SQLite ledger ([state] path) only"
            )
    else:
        ledger = target.state_url is not None
    if source.archive_s3 is not None:
        archive = False
        if archive_only:
            raise UsageError(
                f"the source archive is already S3 ({source.archive_s3.url}): "
                "migrate moves a local archive ([archive] dir) only"
            )
    else:
        archive = target.archive_s3 is not None
    if ledger_only:
        archive = False
    if archive_only:
        ledger = False
    if ledger_only and not ledger:
        raise UsageError(f"{target.path} has no [state] url: there is no PostgreSQL ledger to fill")
    if archive_only and not archive:
        raise UsageError(f"{target.path} has no [archive] url: there is no S3 archive to fill")
    if not (ledger or archive):
        raise UsageError(
            f"nothing to migrate: {target.path} keeps the ledger and the archive where "
            f"{source.path} has them (migrate moves [state] path to [state] url and "
            "[archive] dir to [archive] url)"
        )
    return Plan(
        ledger=ledger,
        archive=archive,
        source_ledger=source.state_path,
        target_url=target.state_url,
        source_archive=source.archive_dir,
        target_archive=target.archive_s3.url if target.archive_s3 is not None else None,
    )
