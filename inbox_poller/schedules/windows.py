"""Fire times, and the date window each fire time asks for (docs/schedules.md §2).

Dates are UTC calendar days; every time given must be an aware datetime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

from inbox_poller.schedules.table import ExportSchedule

FIRST_START_LOOKBACK = timedelta(days=5 * 366)
"""How far back the first start looks for the latest fire time (a 29 February cron fits)."""

Window = tuple[str | None, str | None]
"""(startdate, enddate) as YYYYMMDD, end exclusive; (None, None) for ``window = "none"``."""


def as_utc(moment: datetime, what: str) -> datetime:
    """Return *moment* in UTC; raise ``ValueError`` naming *what* if it is naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def window_for(schedule: ExportSchedule, fire_time: datetime) -> Window:
    """Return (startdate, enddate) as YYYYMMDD for a fire at *fire_time*; end is exclusive.

    Dates are UTC calendar days: Pinpointe reads YYYYMMDD as that day's midnight.
    """
    fire_day = as_utc(fire_time, "fire_time").date()
    days = schedule.window_days
    if days is not None:
        return (fire_day - timedelta(days=days)).strftime("%Y%m%d"), fire_day.strftime("%Y%m%d")
    return schedule.start, schedule.end  # fixed: its dates; none: (None, None)


def _eligible_from(schedule: ExportSchedule) -> datetime | None:
    # A fixed window is exported only once it has ended, so that the one archived copy is
    # complete; fires before its end are ignored.
    if schedule.window != "fixed" or schedule.end is None:
        return None
    return datetime.strptime(schedule.end, "%Y%m%d").replace(tzinfo=UTC)


def _iter_fire_times(
    schedule: ExportSchedule, after: datetime, until: datetime
) -> Iterator[datetime]:
    after, until = as_utc(after, "after"), as_utc(until, "until")
    trigger = schedule.trigger()
    # Every fire time is a whole second, so the first one after *after* is the first one
    # at or after the next whole second; this keeps the interval arithmetic exact.
    start = after.replace(microsecond=0) + timedelta(seconds=1)
    fire: datetime | None = trigger.get_next_fire_time(None, start)
    while fire is not None and fire <= until:
        yield fire.astimezone(UTC)
        fire = trigger.get_next_fire_time(fire, until)


def fire_times_between(
    schedule: ExportSchedule, after: datetime, until: datetime
) -> list[datetime]:
    """Return the fire times t with *after* < t <= *until*, oldest first, in UTC.

    The cost is proportional to the number of fire times returned (about 10 µs each).
    """
    return list(_iter_fire_times(schedule, after, until))


def _latest_per_window(
    schedule: ExportSchedule, fires: Iterable[datetime]
) -> dict[Window, datetime]:
    latest: dict[Window, datetime] = {}
    for fire in fires:
        latest[window_for(schedule, fire)] = fire  # fires are ascending: the last one wins
    return latest


def recent_windows(
    schedule: ExportSchedule, after: datetime | None, now: datetime, wanted: int
) -> tuple[dict[Window, datetime], bool]:
    """Return up to *wanted* most recent windows in (after, now] and whether older ones remain.

    Each window comes with the latest fire time that asked for it. Without *after* (a
    first start) the search goes back ``FIRST_START_LOOKBACK``; a fixed window counts only
    from its end. Windows never go backwards as fire times advance, so scanning a growing
    span back from *now* finds the most recent ones without walking a long downtime fire
    by fire.
    """
    floor = after if after is not None else now - FIRST_START_LOOKBACK
    gate = _eligible_from(schedule)
    if gate is not None:
        floor = max(floor, gate - timedelta(microseconds=1))
    if schedule.window_days is None:
        wanted = 1  # a fixed or open window is one window, whatever the fire time
    span = timedelta(days=1)
    while True:
        low = max(floor, now - span)
        windows = _latest_per_window(schedule, fire_times_between(schedule, low, now))
        if len(windows) >= wanted or low <= floor:
            break
        span *= 2
    kept = dict(sorted(windows.items(), key=lambda item: item[1])[-wanted:])
    # Older windows remain if the oldest fire since *floor* asks for a window not kept.
    oldest = list(islice(_iter_fire_times(schedule, floor, low), 1)) if low > floor else []
    return kept, len(windows) > wanted or any(window_for(schedule, t) not in kept for t in oldest)
