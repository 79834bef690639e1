"""Scheduled exports: the ``[[export]]`` tables, their date windows, and what is due when.

Pure: no I/O and no running scheduler. Time is always a parameter (aware
datetimes, computed in UTC), so the daemon, ``run --once`` and the tests share
the same decisions. APScheduler contributes only its triggers, which define
*when* a schedule fires; the ledger, not a persistent job store, decides what
was already submitted (``reliability.md`` §5). The rules are in
``docs/schedules.md``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Annotated, Any

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from inbox_poller.errors import ConfigError
from inbox_poller.models import FINAL_STATES, STAT_ID_RE, Export, ExportRequest, ExportState

logger = logging.getLogger(__name__)

INTERVAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Every ``every`` schedule fires at INTERVAL_EPOCH + k * interval, whenever the daemon started."""
MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 366 * 86400
MAX_WINDOW_DAYS = 366
DEFAULT_CATCH_UP_LIMIT = 7
"""Missed windows submitted per schedule after downtime, the most recent ones."""
FIRST_START_LOOKBACK = timedelta(days=5 * 366)
"""How far back the first start looks for the latest fire time (a 29 February cron fits)."""
MISFIRE_GRACE_S = 3600
"""How late APScheduler may still run a fire; later ones are left to the ledger catch-up."""
MAX_FAILED_EXPORTS = 3
"""Failed exports of one (stat, window) after which it is no longer resubmitted."""

DONE_STATES = frozenset({ExportState.ARCHIVED, ExportState.ACKNOWLEDGED})
RETRY_STATES = FINAL_STATES - DONE_STATES
PENDING_STATES = frozenset(ExportState) - FINAL_STATES - DONE_STATES

_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
_EVERY_RE = re.compile(r"^([0-9]{1,9})\s*([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WINDOW_RE = re.compile(r"^(?:previous-day|none|fixed|last-([0-9]{1,4})-days?)$")


def _yyyymmdd(value: object) -> str:
    # TOML may hand us a native date (start = 2026-01-01) or an integer (start = 20260101).
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    text = "" if isinstance(value, bool) else str(value).strip()
    if not isinstance(value, (str, int)) or not re.fullmatch(r"[0-9]{8}", text):
        raise ValueError("expected a date as YYYYMMDD (or a TOML date)")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise ValueError(f"{text} is not a real calendar date") from None
    return text


class ExportSchedule(BaseModel):
    """One ``[[export]]`` table: what to export, when, and for which date window."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str
    stat: tuple[str, ...]
    cron: str | None = None
    every: str | None = None
    window: str = "previous-day"
    start: str | None = None
    end: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("expected 1 to 64 of a-z, 0-9, '_' and '-'")
        return value

    @field_validator("stat", mode="before")
    @classmethod
    def _stat_ids(cls, value: object) -> tuple[str, ...]:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            raise ValueError("expected a stat ID or a non-empty list of them")
        ids: list[str] = []
        for item in items:
            usable = isinstance(item, (str, int)) and not isinstance(item, bool)
            text = str(item).strip() if usable else ""
            if not STAT_ID_RE.match(text):
                raise ValueError(f"{item!r} is not a stat ID (1 to 18 digits)")
            if text in ids:
                raise ValueError(f"stat ID {text} is listed twice")
            ids.append(text)
        return tuple(ids)

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                f"expected 5 crontab fields (minute hour day month weekday), got {len(fields)}"
            )
        # APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0: a
        # numeric weekday would silently fire on the wrong day, so only names are accepted.
        if any(char.isdigit() for char in fields[4]):
            raise ValueError(
                "write the weekday field with names (mon-fri, sun): APScheduler 3.x counts"
                " 0 as Monday where crontab counts 0 as Sunday"
            )
        try:
            trigger = CronTrigger.from_crontab(" ".join(fields), timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"not a valid crontab expression: {exc}") from None
        if trigger.get_next_fire_time(None, INTERVAL_EPOCH) is None:
            raise ValueError("this crontab expression never fires")
        return " ".join(fields)

    @field_validator("every")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _EVERY_RE.match(value)
        if found is None:
            raise ValueError('expected a number and a unit s, m, h or d, such as "6h" or "90m"')
        seconds = int(found[1]) * _UNIT_S[found[2]]
        if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
            raise ValueError(f"expected an interval from {MIN_INTERVAL_S}s to 366d")
        return f"{found[1]}{found[2]}"

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        found = _WINDOW_RE.match(value)
        if found is None:
            raise ValueError('expected "previous-day", "last-N-days", "fixed" or "none"')
        if found[1] is not None and not 1 <= int(found[1]) <= MAX_WINDOW_DAYS:
            raise ValueError(f"N in last-N-days must be from 1 to {MAX_WINDOW_DAYS}")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value: object) -> str | None:
        return None if value is None else _yyyymmdd(value)

    @model_validator(mode="after")
    def _consistent(self) -> ExportSchedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError(
                'give exactly one of cron (such as "0 3 * * *") or every (such as "6h")'
            )
        if self.window == "fixed":
            if self.start is None or self.end is None:
                raise ValueError('window = "fixed" needs start and end (YYYYMMDD)')
            if self.end <= self.start:
                raise ValueError("end must be after start (end is exclusive)")
        elif self.start is not None or self.end is not None:
            raise ValueError('start and end are only used with window = "fixed"')
        return self

    @property
    def every_s(self) -> int | None:
        """The interval in seconds, for ``every`` schedules."""
        found = _EVERY_RE.match(self.every or "")
        return None if found is None else int(found[1]) * _UNIT_S[found[2]]

    @property
    def window_days(self) -> int | None:
        """N for ``last-N-days``, 1 for ``previous-day``, None for ``fixed`` and ``none``."""
        if self.window == "previous-day":
            return 1
        found = _WINDOW_RE.match(self.window)
        return int(found[1]) if found is not None and found[1] is not None else None

    def trigger(self) -> Any:
        """Return a new APScheduler trigger (UTC) that says when this schedule fires."""
        seconds = self.every_s
        if seconds is not None:
            return IntervalTrigger(seconds=seconds, start_date=INTERVAL_EPOCH, timezone=UTC)
        return CronTrigger.from_crontab(self.cron, timezone=UTC)

    def describe(self) -> str:
        """One line for the start-up summary."""
        when = f"cron '{self.cron}'" if self.cron is not None else f"every {self.every}"
        window = self.window
        if window == "fixed":
            window = f"fixed {self.start}..{self.end}"
        return f"export {self.name}: stat {','.join(self.stat)}, {when} UTC, window {window}"


def _unique_names(schedules: tuple[ExportSchedule, ...]) -> tuple[ExportSchedule, ...]:
    seen: set[str] = set()
    for schedule in schedules:
        if schedule.name in seen:
            raise ValueError(f"the export name {schedule.name!r} is used more than once")
        seen.add(schedule.name)
    return schedules


def _array_of_tables(value: object) -> object:
    if isinstance(value, Mapping):
        raise ValueError("write each export as an [[export]] table (double brackets)")
    return value


ExportSchedules = Annotated[
    tuple[ExportSchedule, ...], BeforeValidator(_array_of_tables), AfterValidator(_unique_names)
]
"""The type of the config field ``export``: the tables, with unique names."""

_SCHEDULES = TypeAdapter(ExportSchedules)


def parse_schedules(raw: Sequence[Mapping[str, Any]]) -> tuple[ExportSchedule, ...]:
    """Validate the ``[[export]]`` tables; raise ``ConfigError`` naming the key (export.0.cron)."""
    try:
        return _SCHEDULES.validate_python(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        key = ".".join(["export", *(str(part) for part in first["loc"])])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "this key is required"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(message + more, key=key) from None


# ---- windows and fire times ---------------------------------------------------


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def window_for(schedule: ExportSchedule, fire_time: datetime) -> tuple[str | None, str | None]:
    """Return (startdate, enddate) as YYYYMMDD for a fire at *fire_time*; end is exclusive.

    Dates are UTC calendar days: Pinpointe reads YYYYMMDD as that day's midnight.
    """
    fire_day = _utc(fire_time, "fire_time").date()
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
    after, until = _utc(after, "after"), _utc(until, "until")
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


@dataclass(frozen=True)
class DueSubmission:
    """One export a schedule asks for: one stat, one window, at one fire time."""

    schedule_name: str
    fire_time: datetime
    stat: str
    startdate: str | None
    enddate: str | None

    @property
    def request(self) -> ExportRequest:
        return ExportRequest(stat=self.stat, startdate=self.startdate, enddate=self.enddate)


def _latest_per_window(
    schedule: ExportSchedule, fires: Iterable[datetime]
) -> dict[tuple[str | None, str | None], datetime]:
    latest: dict[tuple[str | None, str | None], datetime] = {}
    for fire in fires:
        latest[window_for(schedule, fire)] = fire  # fires are ascending: the last one wins
    return latest


def _recent_windows(
    schedule: ExportSchedule, after: datetime | None, now: datetime, wanted: int
) -> tuple[dict[tuple[str | None, str | None], datetime], bool]:
    """Return up to *wanted* most recent windows in (after, now] and whether older ones remain.

    Windows never go backwards as fire times advance, so scanning a growing span back from
    *now* finds the most recent ones without walking a long downtime fire by fire.
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
    now = _utc(now, "now")
    due: dict[tuple[str, str | None, str | None], DueSubmission] = {}
    for schedule in schedules:
        previous = last_fire.get(schedule.name)
        after = None if previous is None else _utc(previous, "last_fire")
        wanted = 1 if after is None else catch_up_limit
        windows, truncated = _recent_windows(schedule, after, now, wanted)
        if truncated and after is not None:
            logger.warning(
                "export %s: idle since %s; submitting only the %d most recent missed window(s)",
                schedule.name,
                after.isoformat(),
                catch_up_limit,
            )
        for (startdate, enddate), fire in windows.items():
            for stat in schedule.stat:
                key = (stat, startdate, enddate)
                # Two schedules asking for the same export: keep the latest fire time.
                if key not in due or due[key].fire_time < fire:
                    due[key] = DueSubmission(schedule.name, fire, stat, startdate, enddate)
    return sorted(due.values(), key=lambda d: d.fire_time)


# ---- de-duplication against the ledger ------------------------------------------


def should_submit(
    due: DueSubmission, existing: Iterable[Export], *, max_failed: int = MAX_FAILED_EXPORTS
) -> tuple[bool, str]:
    """Decide whether *due* is submitted, given the ledger's exports; return (yes, why).

    Only exports of the same request count (stat, startdate, enddate and method). A pending
    one blocks; an archived or acknowledged one blocks; failed ones are resubmitted until
    *max_failed* of them exist. For a window without dates (``none``) each fire wants fresh
    data, so finished and failed exports created before the fire time are ignored.
    """
    same = sorted(
        (e for e in existing if e.request == due.request), key=lambda e: e.export_id, reverse=True
    )
    for export in same:
        if export.state in PENDING_STATES:
            return (
                False,
                f"export {export.export_id} for the same stat and window is {export.state}",
            )
    if due.startdate is None and due.enddate is None:
        same = [e for e in same if e.created_at >= due.fire_time]
    for export in same:
        if export.state in DONE_STATES:
            return False, f"already exported as export {export.export_id} ({export.state})"
    failed = [e for e in same if e.state in RETRY_STATES]
    if len(failed) >= max_failed:
        return False, (
            f"not resubmitted: {len(failed)} exports of this stat and window failed"
            f" (the last is export {failed[0].export_id})"
        )
    if failed:
        last = failed[0]
        return True, (
            f"resubmitting: export {last.export_id} ended in {last.state}"
            f" ({last.reason or 'no reason recorded'})"
        )
    return True, "no export of this stat and window yet"


# ---- APScheduler job definitions --------------------------------------------------


@dataclass(frozen=True)
class SchedulerEntry:
    """What the daemon passes to ``scheduler.add_job`` for one schedule; nothing is started."""

    schedule_name: str
    id: str
    trigger: Any
    misfire_grace_time: int
    coalesce: bool = True
    max_instances: int = 1
    replace_existing: bool = True

    def add_job_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``BaseScheduler.add_job(func, **kwargs)``."""
        return {
            "id": self.id,
            "name": self.id,
            "trigger": self.trigger,
            "misfire_grace_time": self.misfire_grace_time,
            "coalesce": self.coalesce,
            "max_instances": self.max_instances,
            "replace_existing": self.replace_existing,
        }


def scheduler_entries(schedules: Iterable[ExportSchedule]) -> tuple[SchedulerEntry, ...]:
    """Return one entry per schedule, with the fixed id ``export:<name>``."""
    return tuple(
        SchedulerEntry(
            schedule_name=schedule.name,
            id=f"export:{schedule.name}",
            trigger=schedule.trigger(),
            misfire_grace_time=min(schedule.every_s or MISFIRE_GRACE_S, MISFIRE_GRACE_S),
        )
        for schedule in schedules
    )
