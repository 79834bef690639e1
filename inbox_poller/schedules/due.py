"""What the schedules ask for since their last fire, after downtime too (docs/schedules.md §3)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from inbox_poller.models import ExportRequest
from inbox_poller.schedules.table import ExportSchedule
from inbox_poller.schedules.windows import as_utc, recent_windows

logger = logging.getLogger("inbox_poller.schedules")

DEFAULT_CATCH_UP_LIMIT = 7
"""Missed windows submitted per schedule after downtime, the most recent ones."""


@dataclass(frozen=True)
class DueSubmission:
    """One export a schedule asks for: one stat, one window, at one fire time."""

    schedule_name: str
    fire_time: datetime
    stat: str
    startdate: str | None
    enddate: str | None
    template: ExportRequest | None = None
    """The whole request (method, options, format), when the schedule gives more than a stat."""
    sends_days: int | None = None
    """For a ``sends`` schedule: N of last-N-days. The submitter asks Pinpointe for the
    sends and expands this one due window into one submission per send."""
    origin: str | None = None
    """The send an expanded submission came from."""

    @property
    def request(self) -> ExportRequest:
        if self.template is not None:
            return self.template
        return ExportRequest(stat=self.stat, startdate=self.startdate, enddate=self.enddate)


def due_requests(
    schedules: Iterable[ExportSchedule],
    last_fire: Mapping[str, datetime | None],
    now: datetime,
    *,
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT,
) -> list[DueSubmission]:
    """Return what the schedules ask for in (last_fire[name], now], oldest first.

    Each distinct (stat, window) appears once, with the latest fire time that asked for it,
    even when several schedules or missed fires ask for it. A schedule without a last fire
    time (first start) contributes only its most recent fire time at or before *now*. After
    a long downtime only the *catch_up_limit* most recent windows of each schedule are
    returned; the older ones are logged and skipped. The caller records *now* as each
    schedule's last fire time once the returned submissions are in the ledger.
    """
    if catch_up_limit < 1:
        raise ValueError("catch_up_limit must be at least 1")
    now = as_utc(now, "now")
    due: dict[object, DueSubmission] = {}
    for schedule in schedules:
        previous = last_fire.get(schedule.name)
        after = None if previous is None else as_utc(previous, "last_fire")
        wanted = 1 if after is None else catch_up_limit
        windows, truncated = recent_windows(schedule, after, now, wanted)
        if truncated and after is not None:
            logger.warning(
                "export %s: idle since %s; submitting only the %d most recent missed window(s)",
                schedule.name,
                after.isoformat(),
                catch_up_limit,
            )
        for (startdate, enddate), fire in windows.items():
            days = schedule.sends_days
            if days is not None:
                key: object = ("sends", schedule.name, startdate, enddate)
                due[key] = DueSubmission(
                    schedule.name, fire, "", startdate, enddate, sends_days=days
                )
                continue
            for request in schedule.requests(startdate, enddate):
                plain = request == ExportRequest(request.stat, startdate, enddate)
                # Two schedules asking for the same export: keep the latest fire time.
                if request not in due or due[request].fire_time < fire:
                    due[request] = DueSubmission(
                        schedule.name,
                        fire,
                        request.stat,
                        startdate,
                        enddate,
                        template=None if plain else request,
                    )
    return sorted(due.values(), key=lambda d: d.fire_time)
