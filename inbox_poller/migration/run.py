"""Run a migration: hold the source ledger, copy the halves the plan names, report.

The source ledger is held with the daemon's own lock for the whole run (all of it, on
PostgreSQL), so a migration never copies a ledger or an archive a daemon is still
writing; a running daemon makes it refuse at once. A PostgreSQL target ledger is held
the same way while it is filled, so no daemon starts on a half-copied ledger. The
report counts what was copied, what the target held already, and lists what could not
be copied and why. docs/migration.md.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger import opening
from inbox_poller.ledger.transfer import LedgerCopy, copy_ledger
from inbox_poller.migration.payloads import ArchiveCopy, TargetArchive, copy_archive
from inbox_poller.migration.plan import Plan


@dataclass
class MigrationReport:
    dry_run: bool
    ledger: LedgerCopy | None = None
    archive: ArchiveCopy | None = None

    @property
    def ok(self) -> bool:
        return self.archive is None or not self.archive.problems

    def lines(self) -> list[str]:
        would = "would copy" if self.dry_run else "copied"
        out = ["dry run: nothing was changed"] if self.dry_run else []
        if self.ledger is not None:
            ledger = self.ledger
            rows = ", ".join(f"{table} {n}" for table, n in ledger.rows.items())
            if ledger.done_before:
                out.append(f"ledger: {ledger.target} already holds this migration; nothing to do")
            else:
                state = f" (target: {ledger.target_state})" if ledger.target_state else ""
                out.append(f"ledger: {would} {ledger.source} to {ledger.target}{state}")
            out.append(f"  rows: {rows}")
        if self.archive is not None:
            archive = self.archive
            out.append(f"archive: {archive.source} to {archive.target}")
            out.append(
                f"  manifest lines {archive.lines}; payloads {would} {archive.copied} "
                f"({archive.copied_bytes} bytes), already there {archive.already}"
            )
            if not self.dry_run:
                out.append(
                    f"  manifest objects written {archive.manifests_written}, "
                    f"already there {archive.manifests_already}"
                )
            if archive.problems:
                out.append(f"  not copied ({len(archive.problems)}):")
                out += [f"    {problem}" for problem in archive.problems]
        return out


def run(
    plan: Plan,
    *,
    source_url: str | None,
    password: Callable[[], str] | None,
    target_password: Callable[[], str] | None,
    target_archive: TargetArchive | None,
    dry_run: bool = False,
) -> MigrationReport:
    """Carry out *plan*; *source_url* is the source's PostgreSQL ledger (archive only).

    :raises InboxPollerError: a daemon holds the source ledger, or the target is refused.
    """
    report = MigrationReport(dry_run)
    with ExitStack() as held:
        try:
            held.enter_context(
                opening.run_lock(plan.source_ledger, source_url, password, exclusive=True)
            )
            if plan.ledger and not dry_run:  # no daemon may start on the target meanwhile
                assert plan.target_url is not None
                held.enter_context(
                    opening.run_lock(
                        plan.source_ledger, plan.target_url, target_password, exclusive=True
                    )
                )
        except InboxPollerError as exc:
            raise InboxPollerError(
                f"{exc}: stop it first (systemctl stop inbox-poller); migrate needs the "
                "ledger and the archive to itself"
            ) from None
        # the source at the current schema (a dry run only reads): the target gets the same
        read_only = dry_run and source_url is None
        source = held.enter_context(
            opening.open_ledger(plan.source_ledger, source_url, password, read_only=read_only)
        )
        if plan.ledger:
            assert plan.target_url is not None
            report.ledger = copy_ledger(
                plan.source_ledger,
                plan.target_url,
                target_password() if target_password else None,
                dry_run=dry_run,
            )
        if plan.archive:
            assert target_archive is not None and plan.target_archive is not None
            report.archive = copy_archive(
                plan.source_archive,
                target_archive,
                plan.target_archive,
                source.export_by_job_id,
                dry_run=dry_run,
            )
    return report
