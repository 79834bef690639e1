"""Is the daemon doing its job? A judgement over the ledger, for STATUS= and ``status``.

"Alive" is not enough: a listener can look alive and process nothing for days (a
dropped IMAP session nobody noticed, a token that stopped refreshing). Healthy means the
mailbox was read recently (within three poll intervals), no export has waited past
its notification deadline (docs/reliability.md §7.3), archived mail can be
acknowledged (its processed folder exists), and no hook is failing (docs/hooks.md).
:func:`assess` is the pure judgement; :func:`ledger_health` reads what it needs from
the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from inbox_poller.config import Config
from inbox_poller.ledger.store import Store
from inbox_poller.loop.poller import ACK_PROBLEM_KEY
from inbox_poller.loop.reader import LAST_POLL_KEY
from inbox_poller.models import FINAL_STATES, Export, ExportState, HookRun

STALE_POLL_INTERVALS = 3
"""The mailbox counts as unread after this many poll intervals without a successful pass."""


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

    @property
    def healthy(self) -> bool:
        return not self.problems

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


def assess(
    exports: Iterable[Export],
    last_poll_at: datetime | None,
    now: datetime,
    *,
    poll_interval_s: float,
    notify_deadline_s: float,
    ack_problem: str = "",
    hook_runs: Iterable[HookRun] = (),
) -> Health:
    """Judge the ledger at *now*: pending work, its age, and what is wrong.

    *ack_problem* is why archived mail cannot be acknowledged ("" when it can);
    *hook_runs* are the pending ones, of which those that failed are a problem.
    """
    counts: dict[str, int] = {}
    pending: list[Export] = []
    overdue: list[str] = []
    for export in exports:
        counts[export.state.value] = counts.get(export.state.value, 0) + 1
        if export.state in FINAL_STATES:
            continue
        pending.append(export)
        waiting = (now - _waiting_since(export)).total_seconds()
        if export.state is ExportState.SUBMITTED and waiting > notify_deadline_s:
            overdue.append(export.job_id or str(export.export_id))
    problems: list[str] = []
    last_poll_age = (now - last_poll_at).total_seconds() if last_poll_at else None
    if last_poll_age is None or last_poll_age > STALE_POLL_INTERVALS * poll_interval_s:
        if last_poll_age is None:
            problems.append("the mailbox has not been read successfully yet")
        else:
            problems.append(f"no successful mailbox poll for {format_age(last_poll_age)}")
    if overdue:
        shown = ", ".join(overdue[:5]) + (" …" if len(overdue) > 5 else "")
        problems.append(f"{len(overdue)} export(s) past the notification deadline (job {shown})")
    if ack_problem:
        problems.append(f"archived mail cannot be acknowledged: {ack_problem}")
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
    )


def ledger_health(store: Store, config: Config, now: datetime) -> Health:
    """Judge the ledger at *now* by *config*'s limits (``STATUS=`` and ``inbox-poller status``)."""
    values = store.daemon_values()
    last = values.get(LAST_POLL_KEY)
    return assess(
        store.list_exports(),
        datetime.fromisoformat(last) if last else None,
        now,
        poll_interval_s=config.imap.poll_interval,
        notify_deadline_s=config.exports.notify_deadline,
        ack_problem=values.get(ACK_PROBLEM_KEY, ""),
        hook_runs=store.pending_hook_runs(),
    )
