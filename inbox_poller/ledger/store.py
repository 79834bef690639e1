"""The ledger: one SQLite file holding every export, every mail seen, and the watermarks.

:class:`Store` is the one object the rest of the program holds. It is built in layers,
one noun each: ``schema`` (tables, migrations, row mapping), ``connection`` (the
connection, transactions and the checked state transition), ``mails`` (mail records
and watermarks), ``hookruns`` (the hooks to run after archiving), and here the exports:
one named method per state change, each checked against ``models.ALLOWED_TRANSITIONS``
and recorded in ``events``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from inbox_poller.errors import DuplicateSubmission, LeaseLost, StoreError
from inbox_poller.ledger.connection import LEASED_STATES
from inbox_poller.ledger.engine import Tx
from inbox_poller.ledger.hookruns import HookRecords
from inbox_poller.ledger.schema import from_iso, row_to_export, to_iso
from inbox_poller.models import (
    FINAL_STATES,
    ArchivedFile,
    Export,
    ExportRequest,
    ExportState,
    HookState,
)

FEW_ROWS = 500
"""Up to this many exports, their failed links are read by ID rather than all at once."""
PATHS_PER_QUERY = 500
"""Job IDs per query of :meth:`Store.archive_paths` (well under SQLite's 32,766 variables)."""


def schedule_slot(schedule: str, request: ExportRequest, made_before: int) -> str:
    """The unique slot of the export *schedule* makes of *request* after *made_before*."""
    window = f"{request.startdate or '-'}..{request.enddate or '-'}"
    return (
        f"{schedule}|{request.method}|{request.stat}|{request.options}|{request.format}"
        f"|{window}|{made_before}"
    )


class Store(HookRecords):
    """The SQLite ledger. One instance per process; safe to share between threads."""

    def create_export(
        self,
        request: ExportRequest,
        now: datetime,
        *,
        replaces: Export | None = None,
        schedule: str | None = None,
        origin: str | None = None,
        seen: int | None = None,
    ) -> Export:
        """Insert a new export in ``submitting``: the trace exists before the POST.

        *replaces* is the earlier export this one retries (after a failed job, a lost
        notification or an expired link); the chain's length is kept in ``resubmits``.
        *origin* says which send a ``sends`` schedule expanded it from.

        An export a schedule creates takes a *slot*, unique in the ledger: the schedule,
        the request (method, options, format, window) and how many exports the schedule
        made of it before. Two fires that race for the same (schedule, window, target)
        cannot both insert: the second raises ``DuplicateSubmission``.

        *seen* is how many exports of the request the schedule had made when the caller
        decided to submit (its ``exports_for`` read); the slot is taken from it, not
        counted again here, so a decision made on a view another daemon has since
        changed is refused too, not only an exact race (several daemons on one
        PostgreSQL ledger check and insert in separate transactions).
        """
        reason = "created" if schedule is None else f"created by schedule {schedule}"
        if origin is not None:
            reason += f" from {origin}"
        if replaces is not None:
            reason = f"resubmission of export {replaces.export_id}"
        with self._transaction() as conn:
            if replaces is not None:
                self._check_replaceable(conn, replaces.export_id)
            slot = None
            if schedule is not None and replaces is None:
                slot = (
                    self._schedule_slot(conn, schedule, request)
                    if seen is None
                    else schedule_slot(schedule, request, seen)
                )
            try:
                cursor = conn.execute(
                    "INSERT INTO exports (method, stat, startdate, enddate, state, created_at,"
                    " updated_at, replaces, resubmits, schedule, options, format, origin,"
                    " schedule_slot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " RETURNING export_id",
                    (
                        request.method,
                        request.stat,
                        request.startdate,
                        request.enddate,
                        ExportState.SUBMITTING.value,
                        to_iso(now),
                        to_iso(now),
                        replaces.export_id if replaces else None,
                        replaces.resubmits + 1 if replaces else 0,
                        schedule if replaces is None else replaces.schedule,
                        request.options,
                        request.format,
                        origin if replaces is None else replaces.origin,
                        slot,
                    ),
                )
                export_id = int(cursor.fetchone()["export_id"])
            except self._integrity_errors as exc:
                if slot is None:
                    raise
                raise DuplicateSubmission(
                    f"schedule {schedule} already submitted this export ({slot})"
                ) from exc
            self._event(conn, export_id, None, ExportState.SUBMITTING, reason, now)
        return self.get_export(export_id)

    @staticmethod
    def _schedule_slot(conn: Tx, schedule: str, request: ExportRequest) -> str:
        row = conn.execute(
            "SELECT COUNT(*) AS n FROM exports WHERE schedule = ? AND replaces IS NULL"
            " AND method = ? AND stat = ? AND options = ? AND format = ?"
            " AND startdate IS NOT DISTINCT FROM ? AND enddate IS NOT DISTINCT FROM ?",
            (
                schedule,
                request.method,
                request.stat,
                request.options,
                request.format,
                request.startdate,
                request.enddate,
            ),
        ).fetchone()
        return schedule_slot(schedule, request, int(row["n"]))

    def _check_replaceable(self, conn: Tx, export_id: int) -> None:
        """Refuse to resubmit an export that a later mail brought back to ``notified``, or
        that is resubmitted already.

        The row is locked first (PostgreSQL), so of two daemons resubmitting it at once
        the second reads the successor the first committed and is refused
        (``DuplicateSubmission``): one new Pinpointe job, whoever decided first.
        """
        row = self._export_row(conn, "state", export_id)
        if row is None:
            raise StoreError(f"no export {export_id} in the ledger")
        if ExportState(row["state"]) not in FINAL_STATES:
            raise StoreError(f"export {export_id} is {row['state']} again: not resubmitted")
        later = conn.execute(
            "SELECT export_id FROM exports WHERE replaces = ?", (export_id,)
        ).fetchone()
        if later is not None:
            raise DuplicateSubmission(
                f"export {export_id} is resubmitted already (as export {later['export_id']})"
            )

    def successor(self, export_id: int) -> Export | None:
        """Return the export that resubmitted *export_id*, if any."""
        rows = self._query("SELECT * FROM exports WHERE replaces = ?", (export_id,))
        return self._exports(rows)[0] if rows else None

    def _exports(self, rows: list[Any]) -> list[Export]:
        """Return the exports of *rows*, each with the links that failed for it."""
        if not rows:
            return []
        failed: dict[int, list[str]] = {}
        order = f"ORDER BY failed_at, {self._dialect.insertion_order}"
        query = f"SELECT export_id, url FROM failed_links {order}"  # noqa: S608
        ids: list[int] = []
        if len(rows) <= FEW_ROWS:  # a few exports (one per state change): their links only
            ids = [row["export_id"] for row in rows]
            marks = ",".join("?" * len(ids))
            query = f"SELECT export_id, url FROM failed_links WHERE export_id IN ({marks}) {order}"  # noqa: S608
        for link in self._query(query, ids):
            failed.setdefault(link["export_id"], []).append(link["url"])
        return [row_to_export(row, tuple(failed.get(row["export_id"], ()))) for row in rows]

    def mark_checked(self, export_id: int, remote_status: str, now: datetime) -> None:
        """Record what Pinpointe said about a job still awaiting its notification."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE exports SET checked_at = ?, remote_status = ? WHERE export_id = ?",
                (to_iso(now), remote_status, export_id),
            )
            conn.execute(
                "INSERT INTO events (at, export_id, from_state, to_state, reason)"
                " SELECT ?, export_id, state, state, ? FROM exports WHERE export_id = ?",
                (to_iso(now), f"Pinpointe reports the job as {remote_status!r}", export_id),
            )

    def get_export(self, export_id: int) -> Export:
        rows = self._query("SELECT * FROM exports WHERE export_id = ?", (export_id,))
        if not rows:
            raise StoreError(f"no export {export_id} in the ledger")
        return self._exports(rows)[0]

    def export_by_job_id(self, job_id: str) -> Export | None:
        rows = self._query("SELECT * FROM exports WHERE job_id = ?", (job_id,))
        return self._exports(rows)[0] if rows else None

    def archive_paths(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The archive path of each export of *job_ids* whose payload is checked, by job
        ID: ``run --once`` lists what it archived with one query per ``PATHS_PER_QUERY``,
        not one per export."""
        paths: dict[str, str] = {}
        for start in range(0, len(job_ids), PATHS_PER_QUERY):
            chunk = job_ids[start : start + PATHS_PER_QUERY]
            rows = self._query(
                "SELECT job_id, archive_path FROM exports"  # noqa: S608
                f" WHERE job_id IN ({','.join('?' * len(chunk))})"
                " AND sha256 IS NOT NULL AND archive_path IS NOT NULL",
                chunk,
            )
            paths.update((row["job_id"], row["archive_path"]) for row in rows)
        return paths

    def list_exports(self, states: Iterable[ExportState] | None = None) -> list[Export]:
        """Return exports (optionally only those in *states*), oldest first."""
        if states is None:
            rows = self._query("SELECT * FROM exports ORDER BY export_id")
        else:
            wanted = [s.value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._query(
                f"SELECT * FROM exports WHERE state IN ({marks}) ORDER BY export_id",  # noqa: S608
                wanted,
            )
        return self._exports(rows)

    def last_event_id(self) -> int:
        """Return a mark for :meth:`exports_changed_since`: every event below it is settled.

        On SQLite the newest event's ID (0 for none): one writer at a time, so IDs
        become visible in order. On PostgreSQL several daemons write, and an event ID
        taken by a transaction that commits late becomes visible after higher ones; the
        mark is then a transaction ID below which every transaction has ended
        (``Dialect.events_mark``), and events are followed by the transaction that wrote
        them. Either way, an event committed after the mark is above it.
        """
        rows = self._query(self._dialect.events_mark)
        return int(rows[0]["last"])

    def exports_changed_since(self, event_id: int) -> tuple[int, list[Export]]:
        """Return a new mark and the exports with an event after the mark *event_id*.

        Every change of an export that matching reads (its state, job ID, link, failed
        links, its creation) writes an ``events`` row in the same transaction, so a caller
        holding the exports of an earlier mark stays current by reading only these. An
        export may come back once more than needed (PostgreSQL: its event was committed
        before the mark moved past it), never once less.
        """
        last = self.last_event_id()
        column = self._dialect.events_order
        rows = self._query(
            "SELECT * FROM exports WHERE export_id IN"  # noqa: S608
            f" (SELECT DISTINCT export_id FROM events WHERE {column} > ? AND {column} <= ?)"
            " ORDER BY export_id",
            (event_id, last),
        )
        return last, self._exports(rows)

    def exports_for(self, request: ExportRequest) -> list[Export]:
        """Return the exports of exactly *request* (method, options, format and window),
        oldest first."""
        rows = self._query(
            "SELECT * FROM exports WHERE method = ? AND stat = ?"
            " AND startdate IS NOT DISTINCT FROM ? AND enddate IS NOT DISTINCT FROM ?"
            " AND options = ? AND format = ?"
            " ORDER BY export_id",
            (
                request.method,
                request.stat,
                request.startdate,
                request.enddate,
                request.options,
                request.format,
            ),
        )
        return self._exports(rows)

    def counts_by_state(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM exports GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    def history(self, export_id: int) -> list[tuple[datetime, str | None, str, str | None]]:
        rows = self._query(
            "SELECT at, from_state, to_state, reason FROM events WHERE export_id = ?"
            " ORDER BY event_id",
            (export_id,),
        )
        return [
            (from_iso(r["at"]) or datetime.min, r["from_state"], r["to_state"], r["reason"])
            for r in rows
        ]

    def _change(
        self,
        export_id: int,
        wanted: ExportState,
        now: datetime,
        reason: str | None,
        *,
        attempts_delta: int = 0,
        owner: str | None = None,
        **fields: Any,
    ) -> Export:
        with self._transaction() as conn:
            self._transition(conn, export_id, wanted, now, reason, owner=owner, **fields)
            if attempts_delta:
                conn.execute(
                    "UPDATE exports SET attempts = CASE WHEN attempts + ? < 0 THEN 0"
                    " ELSE attempts + ? END WHERE export_id = ?",
                    (attempts_delta, attempts_delta, export_id),
                )
        return self.get_export(export_id)

    def mark_submitted(self, export_id: int, job_id: str, response: str, now: datetime) -> Export:
        """Record the job ID Pinpointe returned (``submitting`` -> ``submitted``).

        If a notification already revealed the same job ID (the export was
        adopted while its POST was in flight), only the response is recorded.
        """
        with self._transaction() as conn:
            row = self._export_row(conn, "state, job_id", export_id)
            if row is not None and row["job_id"] == job_id:
                conn.execute(
                    "UPDATE exports SET submit_response = ?, submitted_at = ? WHERE export_id = ?",
                    (response, to_iso(now), export_id),
                )
            else:
                self._transition(
                    conn,
                    export_id,
                    ExportState.SUBMITTED,
                    now,
                    None,
                    job_id=job_id,
                    submitted_at=to_iso(now),
                    submit_response=response,
                )
        return self.get_export(export_id)

    def mark_submit_failed(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.SUBMIT_FAILED, now, reason)

    def mark_submit_unknown(self, export_id: int, reason: str, now: datetime) -> Export:
        return self._change(export_id, ExportState.SUBMIT_UNKNOWN, now, reason)

    def mark_downloading(
        self, export_id: int, now: datetime, *, owner: str | None = None
    ) -> Export:
        """Start (or restart) a download; counts one attempt. (A claim does both at once;
        this restarts one the *owner* holds, after its verified payload vanished.)"""
        return self._change(
            export_id,
            ExportState.DOWNLOADING,
            now,
            None,
            attempts_delta=1,
            owner=owner,
            part_path=None,
        )

    # Every change below of an export in flight takes the *owner* that claimed it
    # (``claim_download``): made for a daemon that lost its lease, it raises ``LeaseLost``.

    def mark_download_parked(
        self,
        export_id: int,
        now: datetime,
        reason: str = "interrupted by shutdown",
        *,
        owner: str | None = None,
    ) -> Export:
        """A download interrupted by shutdown (or by the archive's outage, *reason*): back
        to ``notified``, the attempt not counted."""
        return self._change(
            export_id,
            ExportState.NOTIFIED,
            now,
            reason,
            attempts_delta=-1,
            owner=owner,
            part_path=None,
        )

    def mark_download_retry(
        self, export_id: int, reason: str, now: datetime, *, owner: str | None = None
    ) -> Export:
        """A transient failure: back to ``notified`` so a later pass tries again."""
        return self._change(
            export_id, ExportState.NOTIFIED, now, reason, owner=owner, part_path=None
        )

    def mark_verified(
        self,
        export_id: int,
        part_path: str,
        archived: ArchivedFile,
        now: datetime,
        *,
        owner: str | None = None,
    ) -> None:
        """The complete, valid payload is fsynced at *part_path*; record what it will become.

        Returns nothing: the caller goes on with what it has, so the row is not read back.
        Relaxed (docs/reliability.md §6.1): lost with the machine, the export is
        downloaded again, and its payload replaces a file published meanwhile.
        """
        with self._transaction(durable=False) as conn:
            self._transition(
                conn,
                export_id,
                ExportState.VERIFIED,
                now,
                None,
                owner=owner,
                part_path=part_path,
                archive_path=archived.path,
                bytes=archived.bytes,
                sha256=archived.sha256,
                records=archived.records,
                top_level=archived.top_level,
                source=archived.source,
                payload_format=archived.format,
            )

    def record_manifest_offset(
        self, export_id: int, offset: int, *, owner: str | None = None
    ) -> None:
        """Record where *export_id*'s manifest line is about to start (before it is written)."""
        with self._transaction() as conn:
            if owner is not None:
                self._check_owner(conn, export_id, owner)
            conn.execute(
                "UPDATE exports SET manifest_offset = ? WHERE export_id = ?", (offset, export_id)
            )

    def mark_archived(
        self,
        export_id: int,
        now: datetime,
        *,
        hooks: Sequence[str] = (),
        event: str = "",
        owner: str | None = None,
    ) -> Export:
        """Record the export as archived; in the same transaction, queue a run of each of
        *hooks* with *event* (its manifest line) as payload, due now.

        Relaxed (docs/reliability.md §6.1): lost with the machine, the export is finished
        again from ``verified`` and its recorded manifest offset, as after a crash at
        ``download:after-manifest``; its mail is acknowledged and its hooks run only
        after a :meth:`sync`.
        """
        with self._transaction(durable=False) as conn:
            try:
                self._transition(
                    conn,
                    export_id,
                    ExportState.ARCHIVED,
                    now,
                    None,
                    owner=owner,
                    archived_at=to_iso(now),
                    part_path=None,
                )
            except self._integrity_errors as exc:  # schema v9: one archived export per path
                raise StoreError(
                    f"export {export_id}: another export is already archived at its archive"
                    " path; not archived twice"
                ) from exc
            for hook in hooks:
                conn.execute(
                    "INSERT INTO hook_runs (export_id, hook, payload, state, next_at, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (export_id, hook, event, HookState.PENDING.value, to_iso(now), to_iso(now)),
                )
        return self.get_export(export_id)

    def mark_redownload(
        self, export_id: int, reason: str, now: datetime, *, owner: str | None = None
    ) -> Export:
        """A verified file vanished before it was archived: download again."""
        return self._change(
            export_id, ExportState.DOWNLOADING, now, reason, owner=owner, part_path=None
        )

    def mark_link_expired(
        self, export_id: int, reason: str, now: datetime, *, owner: str | None = None
    ) -> Export:
        """The link answered 403/404/410; another mail's link, if one is kept, is next."""
        return self._link_failed(export_id, ExportState.LINK_EXPIRED, reason, now, owner)

    def mark_failed(
        self,
        export_id: int,
        reason: str,
        now: datetime,
        *,
        link_failed: bool = False,
        owner: str | None = None,
        unstarted: bool = False,
    ) -> Export:
        """The export failed for good; with *link_failed*, its link did (another may work).

        A link failure is remembered (never tried again), and the oldest link of the
        export's other mails not yet tried takes its place at once (``notified``).
        *unstarted*: the attempt its claim counted was never started (given up first).
        """
        if link_failed:
            return self._link_failed(export_id, ExportState.FAILED, reason, now, owner)
        return self._change(
            export_id,
            ExportState.FAILED,
            now,
            reason,
            owner=owner,
            attempts_delta=-1 if unstarted else 0,
            part_path=None,
        )

    def _link_failed(
        self,
        export_id: int,
        wanted: ExportState,
        reason: str,
        now: datetime,
        owner: str | None = None,
    ) -> Export:
        with self._transaction() as conn:
            self._transition(conn, export_id, wanted, now, reason, owner=owner, part_path=None)
            self._record_failed_link(conn, export_id, reason, now)
            self._next_link(conn, export_id, now)
        return self.get_export(export_id)

    def part_path(self, export_id: int) -> str | None:
        rows = self._query("SELECT part_path FROM exports WHERE export_id = ?", (export_id,))
        return rows[0]["part_path"] if rows else None

    # ---- claims and leases (several daemons on one ledger) ---------------------

    @property
    def shared(self) -> bool:
        """Whether other daemons may work on this ledger at the same time (PostgreSQL);
        a SQLite ledger has one process at a time, under its run lock."""
        return self._dialect.shared

    def claim_download(
        self, owner: str, now: datetime, lease: timedelta, *, skip: Collection[int] = ()
    ) -> Export | None:
        """Take the oldest export waiting for its download, for *owner*, until *lease* ends.

        Waiting: ``notified``, or ``downloading``/``verified`` under a lease that ran out
        (its daemon died or lost the database) or without one (a daemon that did not
        claim, or :meth:`expire_leases`): that one is taken over, and its event says from
        whom. A ``downloading`` one is downloaded again (the dead daemon's partial file
        may be on its own machine); a ``verified`` one stays ``verified``, so that the
        new owner finishes it from the checked part if it can see it, and downloads again
        only if it cannot (``ExportArchiver``). The row is read ``FOR UPDATE SKIP
        LOCKED`` on PostgreSQL, so daemons claiming at once each get another export and
        none waits for the other; the move (one attempt counted for a download) is in the
        same transaction. Leases are taken and compared on the database's clock when it
        has one (PostgreSQL), *now* otherwise. Exports in *skip* (tried already in this
        pass) are not taken. Returns None when nothing waits.
        """
        with self._transaction() as conn:
            now = self._clock(conn, now)
            row = self._next_to_claim(conn, now, skip)
            if row is None:
                return None
            export_id = int(row["export_id"])
            state = ExportState(row["state"])
            reason = f"claimed by {owner}"
            if state is not ExportState.NOTIFIED:
                reason = (
                    f"taken over by {owner} from {row['owner'] or 'a daemon without a lease'}"
                    f" (lease until {row['lease_until'] or '-'})"
                )
            if state is ExportState.VERIFIED:
                conn.execute(
                    "UPDATE exports SET owner = ?, lease_until = ?, reason = ?, updated_at = ?"
                    " WHERE export_id = ?",
                    (owner, to_iso(now + lease), reason, to_iso(now), export_id),
                )
                self._event(conn, export_id, state, state, reason, now)
            else:
                self._transition(
                    conn,
                    export_id,
                    ExportState.DOWNLOADING,
                    now,
                    reason,
                    part_path=None,
                    owner=None,  # not a check: the claim is what makes *owner* the holder
                    lease_until=to_iso(now + lease),
                )
                conn.execute(
                    "UPDATE exports SET owner = ?, attempts = attempts + 1 WHERE export_id = ?",
                    (owner, export_id),
                )
        return self.get_export(export_id)

    def _next_to_claim(self, conn: Tx, now: datetime, skip: Collection[int]) -> Any:
        """The row of the oldest export :meth:`claim_download` may take, or None.

        Two searches, each along the ``state`` index in export order, not one with
        ``OR``: SQLite answers that one by collecting and sorting every waiting export,
        so each claim of a backlog cost O(backlog), 0.8 ms with 6,000 waiting, under the
        ledger's lock. The lapsed leases (few) are looked for first; a ``notified``
        export is then taken only if it is older.
        """
        columns = "SELECT export_id, state, owner, lease_until FROM exports"
        skipped = f" AND export_id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        tail = f"{skipped} ORDER BY export_id LIMIT 1{self._dialect.skip_locked}"
        lapsed = conn.execute(
            f"{columns} WHERE state IN (?, ?) AND (lease_until IS NULL OR lease_until < ?){tail}",
            (ExportState.DOWNLOADING.value, ExportState.VERIFIED.value, to_iso(now), *skip),
        ).fetchone()
        older = () if lapsed is None else (int(lapsed["export_id"]),)
        notified = conn.execute(
            f"{columns} WHERE state = ?{' AND export_id < ?' if older else ''}{tail}",
            (ExportState.NOTIFIED.value, *older, *skip),
        ).fetchone()
        return lapsed if notified is None else notified

    def _clock(self, conn: Tx, now: datetime) -> datetime:
        """The time leases are taken and compared on: the database's, else *now*."""
        if self._dialect.clock is None:
            return now
        value: datetime = conn.execute(self._dialect.clock).fetchone()["now"]
        return value.astimezone(UTC)

    def renew_leases(self, owner: str, now: datetime, lease: timedelta) -> int:
        """The heartbeat: extend the leases of *owner*'s exports in flight; return how many.

        An export another daemon took over is no longer *owner*'s and is not renewed.
        """
        with self._transaction() as conn:
            now = self._clock(conn, now)
            cursor = conn.execute(
                "UPDATE exports SET lease_until = ? WHERE owner = ? AND state IN (?, ?)"
                " RETURNING export_id",
                (
                    to_iso(now + lease),
                    owner,
                    ExportState.DOWNLOADING.value,
                    ExportState.VERIFIED.value,
                ),
            )
            return len(cursor.fetchall())

    def hold(self, export_id: int, owner: str, now: datetime, lease: timedelta) -> None:
        """Renew *owner*'s lease on *export_id* now, or raise ``LeaseLost``.

        Called before a step that cannot be undone (publishing the payload, appending
        its manifest line): a daemon whose lease ran out stops there, and one that holds
        it has a whole *lease* to finish before anyone may take the export over.
        Relaxed (docs/reliability.md §6.1): it changes the lease alone.
        """
        with self._transaction(durable=False) as conn:
            self._check_owner(conn, export_id, owner)
            now = self._clock(conn, now)
            conn.execute(
                "UPDATE exports SET lease_until = ? WHERE export_id = ?",
                (to_iso(now + lease), export_id),
            )

    def _check_owner(self, conn: Tx, export_id: int, owner: str) -> None:
        row = self._export_row(conn, "state, owner", export_id)
        if row is None:
            raise StoreError(f"no export {export_id} in the ledger")
        in_flight = ExportState(row["state"]) in LEASED_STATES
        if not in_flight or row["owner"] != owner:
            raise LeaseLost(export_id, owner, row["owner"] if in_flight else None)

    def release_claim(self, export_id: int, owner: str) -> bool:
        """Hand *owner*'s export in flight back, in its state, for the next claim (this
        process's or another's) to take over at once; False if it is no longer *owner*'s.

        For work abandoned without an outcome (the ledger was unavailable when it ended):
        the heartbeat would otherwise renew its lease for as long as the process lives.
        """
        with self._transaction() as conn:
            row = conn.execute(
                "UPDATE exports SET owner = NULL, lease_until = NULL"
                " WHERE export_id = ? AND owner = ? AND state IN (?, ?) RETURNING export_id",
                (export_id, owner, ExportState.DOWNLOADING.value, ExportState.VERIFIED.value),
            ).fetchone()
        return row is not None

    def expire_leases(self) -> int:
        """End every lease at once; return how many exports in flight it freed.

        Only for a process that knows no other works on the ledger (SQLite, under its
        run lock): what the previous process left in flight is claimed again at once,
        as before leases, instead of a lease later.
        """
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE exports SET lease_until = NULL WHERE state IN (?, ?) RETURNING export_id",
                (ExportState.DOWNLOADING.value, ExportState.VERIFIED.value),
            )
            return len(cursor.fetchall())

    def in_flight_by_owner(self) -> dict[str, int]:
        """How many exports each daemon holds in flight (``status``: who is working)."""
        rows = self._query(
            "SELECT owner, COUNT(*) AS n FROM exports WHERE state IN (?, ?)"
            " AND owner IS NOT NULL GROUP BY owner",
            (ExportState.DOWNLOADING.value, ExportState.VERIFIED.value),
        )
        return {row["owner"]: int(row["n"]) for row in rows}

    def lease(self, export_id: int) -> tuple[str | None, datetime | None]:
        """Return who holds *export_id* and until when (None, None: nobody)."""
        rows = self._query(
            "SELECT owner, lease_until FROM exports WHERE export_id = ?", (export_id,)
        )
        if not rows:
            raise StoreError(f"no export {export_id} in the ledger")
        return rows[0]["owner"], from_iso(rows[0]["lease_until"])

    # ---- daemon state ----------------------------------------------------------

    def set_daemon_value(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO daemon_state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def daemon_values(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._query("SELECT * FROM daemon_state")}
