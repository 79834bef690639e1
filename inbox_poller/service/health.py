"""Is the daemon doing its job? A judgement over the ledger, for STATUS= and ``status``.

"Alive" is not enough: a listener can look alive and process nothing for days (a
dropped IMAP session nobody noticed, a token that stopped refreshing). Healthy means the
mailbox was read recently (within three poll intervals), no export has waited past
its notification deadline (docs/reliability.md §7.3), no export failed in the last
24 hours (``submit_failed``, ``failed``, ``link_expired``), archived mail can be
acknowledged (its processed folder exists), and no hook is failing (docs/hooks.md).
:func:`assess` is the pure judgement; :func:`ledger_health` reads what it needs from
the ledger.

Two ways of running are judged: the daemon (``run``), and ``run --once`` from cron.
Whichever made the last start counts (``Health.mode``): for cron, the daemon need not
run, the last run must have succeeded, and ``imap.poll_interval`` is read as the
interval cron runs it at.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from inbox_poller.config import Config
from inbox_poller.ledger.keys import ACK_PROBLEM_KEY, LAST_POLL_KEY, LAST_RUN_KEY, LOGIN_PROBLEM_KEY
from inbox_poller.ledger.store import Store
from inbox_poller.models import FINAL_STATES, Export, ExportState, HookRun
from inbox_poller.ports import HealthSample

STALE_POLL_INTERVALS = 3
"""The mailbox counts as unread after this many poll intervals without a successful pass."""
FAILURE_STATES = frozenset(
    {ExportState.SUBMIT_FAILED, ExportState.FAILED, ExportState.LINK_EXPIRED}
)
RECENT_FAILURE = timedelta(hours=24)
"""An export that ended in a failure state this recently makes the daemon unhealthy."""
DAEMON_STARTED_KEY = "daemon_started_at"
"""Ledger key: when the daemon last started (``run``); ``LAST_RUN_KEY`` is ``run --once``'s."""
SHOWN = 3
"""How many job IDs (and reasons) a problem names before "…"."""

Mode = Literal["daemon", "once"]


def format_age(seconds: float) -> str:
    """Return a short human age: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@dataclass(frozen=True)
class Health:
    """The daemon's state as one judgement."""

    pending: int
    oldest_pending_age_s: float | None
    last_poll_age_s: float | None
    counts: dict[str, int]
    problems: tuple[str, ...]
    at: datetime | None = None
    """When the judgement was made."""
    oldest_pending_since: datetime | None = None
    last_poll_at: datetime | None = None
    overdue: int = 0
    recent_failures: int = 0
    mode: Mode = "daemon"
    """``once`` when ``run --once`` made the last start (cron), else ``daemon``."""
    last_run_at: datetime | None = None
    """When the last ``run --once`` ended."""

    @property
    def healthy(self) -> bool:
        return not self.problems

    def sample(self) -> HealthSample:
        """The gauges' view of this judgement (``ports.Metrics.observe_health``)."""
        return HealthSample(
            counts=self.counts,
            oldest_waiting_at=self.oldest_pending_since,
            last_pass_at=self.last_poll_at,
            overdue=self.overdue,
            recent_failures=self.recent_failures,
            healthy=self.healthy,
        )

    def status_line(self) -> str:
        """One line for systemd's ``STATUS=`` and the first line of ``inbox-poller status``."""
        parts = [f"{self.pending} pending export{'s' if self.pending != 1 else ''}"]
        if self.oldest_pending_age_s is not None:
            parts[0] += f", oldest {format_age(self.oldest_pending_age_s)}"
        if self.last_poll_age_s is None:
            parts.append("mailbox not read yet")
        else:
            parts.append(f"last poll {format_age(self.last_poll_age_s)} ago")
        line = "; ".join(parts)
        if self.problems:
            line += "; UNHEALTHY: " + "; ".join(self.problems)
        return line


def _waiting_since(export: Export) -> datetime:
    return export.submitted_at or export.created_at


def _shown(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (" …" if len(items) > SHOWN else "")


def _failure(export: Export) -> str:
    reason = " ".join((export.reason or "").split())
    if len(reason) > 80:
        reason = reason[:79] + "…"
    name = f"job {export.job_id}" if export.job_id else f"export {export.export_id}"
    return f"{name} {export.state.value}" + (f": {reason}" if reason else "")


def assess(
    exports: Iterable[Export],
    last_poll_at: datetime | None,
    now: datetime,
    *,
    poll_interval_s: float,
    notify_deadline_s: float,
    ack_problem: str = "",
    login_problem: str = "",
    mode: Mode = "daemon",
    last_run: Mapping[str, object] | None = None,
    hook_runs: Iterable[HookRun] = (),
) -> Health:
    """Judge the ledger at *now*: pending work, its age, and what is wrong.

    *ack_problem* is why archived mail cannot be acknowledged ("" when it can);
    *login_problem* why the mailbox cannot be logged in to ("" when it can).
    *last_run* is what the last ``run --once`` recorded (``at``, ``ok``, ``failed``);
    in mode ``once`` a failed last run is a problem. *hook_runs* are the pending ones,
    of which those that failed are a problem.
    """
    counts: dict[str, int] = {}
    pending: list[Export] = []
    overdue: list[str] = []
    failures: list[str] = []
    for export in exports:
        counts[export.state.value] = counts.get(export.state.value, 0) + 1
        if export.state in FAILURE_STATES and now - export.updated_at <= RECENT_FAILURE:
            failures.append(_failure(export))
        if export.state in FINAL_STATES:
            continue
        pending.append(export)
        waiting = (now - _waiting_since(export)).total_seconds()
        if export.state is ExportState.SUBMITTED and waiting > notify_deadline_s:
            overdue.append(export.job_id or str(export.export_id))
    problems: list[str] = []
    if login_problem:
        problems.append(f"mailbox login: {login_problem}")
    last_poll_age = (now - last_poll_at).total_seconds() if last_poll_at else None
    if last_poll_age is None or last_poll_age > STALE_POLL_INTERVALS * poll_interval_s:
        if last_poll_age is None:
            problems.append("the mailbox has not been read successfully yet")
        else:
            problems.append(f"no successful mailbox poll for {format_age(last_poll_age)}")
    if overdue:
        shown = ", ".join(overdue[:5]) + (" …" if len(overdue) > 5 else "")
        problems.append(f"{len(overdue)} export(s) past the notification deadline (job {shown})")
    if failures:
        problems.append(f"{len(failures)} export(s) failed in the last 24h ({_shown(failures)})")
    if ack_problem:
        problems.append(f"archived mail cannot be acknowledged: {ack_problem}")
    run_at = _parse_time(last_run.get("at")) if last_run else None
    if mode == "once" and last_run and not last_run.get("ok"):
        failed = [str(line) for line in _as_list(last_run.get("failed"))]
        when = f" at {utc_iso(run_at)}" if run_at else ""
        problems.append(f"the last run --once{when} failed: {_shown(failed) or 'unknown'}")
    failing = [run for run in hook_runs if run.failing]
    if failing:
        worst = max(failing, key=lambda run: run.attempts)
        problems.append(
            f"{len(failing)} hook run(s) failing (job {worst.job_id}: {worst.hook} failed "
            f"{worst.attempts} time(s): {worst.last_error})"
        )
    oldest = min((_waiting_since(e) for e in pending), default=None)
    return Health(
        pending=len(pending),
        oldest_pending_age_s=(now - oldest).total_seconds() if oldest else None,
        last_poll_age_s=last_poll_age,
        counts=counts,
        problems=tuple(problems),
        at=now,
        oldest_pending_since=oldest,
        last_poll_at=last_poll_at,
        overdue=len(overdue),
        recent_failures=len(failures),
        mode=mode,
        last_run_at=run_at,
    )


def utc_iso(moment: datetime | None) -> str | None:
    """Return *moment* as an absolute UTC time, ``2026-11-29T04:41:02Z``; None for None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def run_mode(values: Mapping[str, str]) -> tuple[Mode, dict[str, object] | None]:
    """Return how inbox-poller runs here, by the last start, and ``run --once``'s record.

    ``once`` when a ``run --once`` ended after the daemon's last start (or the daemon
    never started), else ``daemon``.
    """
    try:
        record = json.loads(values[LAST_RUN_KEY]) if LAST_RUN_KEY in values else None
    except ValueError:
        record = None
    last_run = record if isinstance(record, dict) else None
    run_at = _parse_time(last_run.get("at")) if last_run else None
    started = _parse_time(values.get(DAEMON_STARTED_KEY))
    if run_at is not None and (started is None or run_at > started):
        return "once", last_run
    return "daemon", last_run


def ledger_health(store: Store, config: Config, now: datetime) -> Health:
    """Judge the ledger at *now* by *config*'s limits (``STATUS=`` and ``inbox-poller status``)."""
    values = store.daemon_values()
    last = values.get(LAST_POLL_KEY)
    mode, last_run = run_mode(values)
    return assess(
        store.list_exports(),
        datetime.fromisoformat(last) if last else None,
        now,
        poll_interval_s=config.imap.poll_interval,
        notify_deadline_s=config.exports.notify_deadline,
        ack_problem=values.get(ACK_PROBLEM_KEY, ""),
        login_problem=values.get(LOGIN_PROBLEM_KEY, ""),
        mode=mode,
        last_run=last_run,
        hook_runs=store.pending_hook_runs(),
    )
