"""Hook runs: what must run after an export is archived, at least once, across restarts.

Rows are created in the transaction that moves an export to ``archived``
(:meth:`~.store.Store.mark_archived`), so a crash never loses one; a run is marked
``done`` only after the hook exited 0, so a crash during a run repeats it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from inbox_poller.ledger.mails import MailRecords
from inbox_poller.ledger.schema import row_to_hook_run, to_iso
from inbox_poller.models import HookRun, HookState

_SELECT = "SELECT h.*, e.job_id FROM hook_runs h JOIN exports e ON e.export_id = h.export_id"


class HookRecords(MailRecords):
    """The ``hook_runs`` table; a base of :class:`~.store.Store`."""

    def pending_hook_runs(self) -> list[HookRun]:
        """Return every run not done yet, the one due first first."""
        rows = self._query(f"{_SELECT} WHERE h.state = ?", (HookState.PENDING.value,))
        return sorted((row_to_hook_run(row) for row in rows), key=lambda run: run.next_at)

    def hook_runs(self, export_ids: Iterable[int] | None = None) -> list[HookRun]:
        """Return the runs of *export_ids* (default: all), by export and hook."""
        rows = self._query(f"{_SELECT} ORDER BY h.export_id, h.hook")
        wanted = None if export_ids is None else set(export_ids)
        return [
            row_to_hook_run(row) for row in rows if wanted is None or row["export_id"] in wanted
        ]

    def claim_hook_run(self, export_id: int, hook: str, now: datetime, until: datetime) -> bool:
        """Take a due run for this process until *until*; False if another daemon took it.

        Its ``next_at`` moves to *until* in the same statement that checks it is due, so
        no other daemon on a shared ledger sees it due while it runs; if this process dies
        meanwhile, the run is due again at *until* (at least once, as on one machine).
        """
        with self._transaction() as conn:
            row = conn.execute(
                "UPDATE hook_runs SET next_at = ?"
                " WHERE export_id = ? AND hook = ? AND state = ? AND next_at <= ?"
                " RETURNING export_id",
                (to_iso(until), export_id, hook, HookState.PENDING.value, to_iso(now)),
            ).fetchone()
        return row is not None

    def release_hook_run(self, export_id: int, hook: str, now: datetime) -> None:
        """Make a claimed run due *now* again (this process stops before finishing it)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hook_runs SET next_at = ? WHERE export_id = ? AND hook = ? AND state = ?",
                (to_iso(now), export_id, hook, HookState.PENDING.value),
            )

    def mark_hook_done(self, export_id: int, hook: str, now: datetime) -> None:
        self._finish_hook(export_id, hook, HookState.DONE, None, now)

    def mark_hook_skipped(self, export_id: int, hook: str, reason: str, now: datetime) -> None:
        self._finish_hook(export_id, hook, HookState.SKIPPED, reason, now)

    def mark_hook_failed(self, export_id: int, hook: str, error: str, next_at: datetime) -> None:
        """Count one failed run and say when the next one is due."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hook_runs SET attempts = attempts + 1, last_error = ?, next_at = ?"
                " WHERE export_id = ? AND hook = ? AND state = ?",
                (error, to_iso(next_at), export_id, hook, HookState.PENDING.value),
            )

    def _finish_hook(
        self, export_id: int, hook: str, state: HookState, error: str | None, now: datetime
    ) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE hook_runs SET state = ?, finished_at = ?,"
                " last_error = COALESCE(?, last_error)"
                " WHERE export_id = ? AND hook = ? AND state = ?",
                (state.value, to_iso(now), error, export_id, hook, HookState.PENDING.value),
            )
