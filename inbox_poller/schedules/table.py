"""One ``[[export]]`` table: its keys, their validation, and the trigger it defines.

The config validates the ``export`` field with :data:`ExportSchedules`, so every
error names its key (``export.1.cron``). The rules are in docs/schedules.md §1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from inbox_poller.methods import describe, make_request
from inbox_poller.methods import method as method_named
from inbox_poller.models import CONTACT_DATA_METHOD, STAT_ID_RE, ExportRequest
from inbox_poller.tomlschema import After, Before, Table

INTERVAL_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Every ``every`` schedule fires at INTERVAL_EPOCH + k * interval, whenever the daemon started."""
MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 366 * 86400
MAX_WINDOW_DAYS = 366

# \Z, not $, which would also accept a final newline (as the ID patterns in models.py)
_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}\Z")
_EVERY_RE = re.compile(r"^([0-9]{1,9})\s*([smhd])\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SENDS_RE = re.compile(r"^last-([0-9]{1,4})-days?\Z")
_WINDOW_RE = re.compile(r"^(?:previous-day|none|fixed|last-([0-9]{1,4})-days?)\Z")


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


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("expected 1 to 64 of a-z, 0-9, '_' and '-'")
    return value


def _id_list(value: object) -> object:
    items = list(value) if isinstance(value, list | tuple) else [value]
    return tuple(
        str(item) if isinstance(item, int) and not isinstance(item, bool) else item
        for item in items
    )


def _custom_fields(value: object) -> object:
    if isinstance(value, list):
        return tuple(
            str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            for item in value
        )
    return value


def _sends(value: str) -> str:
    found = _SENDS_RE.match(value)
    if found is None or not 1 <= int(found[1]) <= MAX_WINDOW_DAYS:
        raise ValueError(f'expected "last-N-days" with N from 1 to {MAX_WINDOW_DAYS}')
    return value


def _stat_ids(value: object) -> tuple[str, ...]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("expected a stat ID or a non-empty list of them")
    ids: list[str] = []
    for item in items:
        usable = isinstance(item, str | int) and not isinstance(item, bool)
        text = str(item).strip() if usable else ""
        if not STAT_ID_RE.match(text):
            raise ValueError(f"{item!r} is not a stat ID (1 to 18 digits)")
        if text in ids:
            raise ValueError(f"stat ID {text} is listed twice")
        ids.append(text)
    return tuple(ids)


def _crontab(value: str) -> str:
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
    # imported here, not at the top: a config without [[export]] tables (every
    # command but the daemon's) need not load APScheduler (bench/bench_cli_startup.py)
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger.from_crontab(" ".join(fields), timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"not a valid crontab expression: {exc}") from None
    if trigger.get_next_fire_time(None, INTERVAL_EPOCH) is None:
        raise ValueError("this crontab expression never fires")
    return " ".join(fields)


def _interval(value: str) -> str:
    found = _EVERY_RE.match(value)
    if found is None:
        raise ValueError('expected a number and a unit s, m, h or d, such as "6h" or "90m"')
    seconds = int(found[1]) * _UNIT_S[found[2]]
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"expected an interval from {MIN_INTERVAL_S}s to 366d")
    return f"{found[1]}{found[2]}"


def _window(value: str) -> str:
    found = _WINDOW_RE.match(value)
    if found is None:
        raise ValueError('expected "previous-day", "last-N-days", "fixed" or "none"')
    if found[1] is not None and not 1 <= int(found[1]) <= MAX_WINDOW_DAYS:
        raise ValueError(f"N in last-N-days must be from 1 to {MAX_WINDOW_DAYS}")
    return value


IdList = Annotated[tuple[str, ...] | None, Before(_id_list)]


@dataclass(frozen=True, kw_only=True)
class ExportSchedule(Table):
    """One ``[[export]]`` table: what to export, when, and for which date window."""

    name: Annotated[str, After(_name)]
    stat: Annotated[tuple[str, ...] | None, Before(_stat_ids)] = None
    """None for a ``sends`` table and the other methods (``config show`` leaves it out)."""
    method: str = CONTACT_DATA_METHOD
    """The Pinpointe method (``inbox_poller.methods``); its own keys follow."""
    list: IdList = None
    segment: IdList = None
    tag: IdList = None
    status: str | None = None
    include_membership: bool | None = None
    custom_fields: Annotated[str | tuple[str, ...] | None, Before(_custom_fields)] = None
    format: str | None = None
    sends: Annotated[str | None, After(_sends)] = None
    """``last-N-days``: every newsletter send of the last N days (GetNewslettersSent)."""
    cron: Annotated[str | None, After(_crontab)] = None
    every: Annotated[str | None, After(_interval)] = None
    window: Annotated[str, After(_window)] = "previous-day"
    start: Annotated[str | None, Before(_yyyymmdd)] = None
    end: Annotated[str | None, Before(_yyyymmdd)] = None

    def check(self) -> None:
        self._check_method()
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

    def _check_method(self) -> None:
        try:
            found = method_named(self.method)
        except ValueError as exc:
            raise ValueError(f"method: {exc}") from None
        if self.sends is not None:
            if self.method != CONTACT_DATA_METHOD:
                raise ValueError(f"sends is only used with method = {CONTACT_DATA_METHOD!r}")
            if self.stat:
                raise ValueError("give stat or sends, not both")
        given = [*self.method_options(), *(["stat"] if self.stat else [])]
        for key in given:
            if found.option(key) is None:
                takes = ", ".join(option.key for option in found.options)
                raise ValueError(f"{self.method} takes no {key!r} (it takes {takes})")
        if self.method == CONTACT_DATA_METHOD:
            if not self.stat and self.sends is None:
                raise ValueError("give stat (a stat ID or a list of them) or sends")
        else:
            try:
                self.requests()
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        if self.format is not None and self.format not in found.formats:
            raise ValueError(
                f"{self.method} does not take format {self.format!r} (its documentation"
                f" allows {', '.join(found.formats)})"
            )
        if found.date_form == "none" and self.window != "none":
            raise ValueError(f'{self.method} takes no dates: set window = "none"')

    def method_options(self) -> dict[str, object]:
        """The method's own keys that are set (``stat`` not included)."""
        values = {
            "list": self.list,
            "segment": self.segment,
            "tag": self.tag,
            "status": self.status,
            "include_membership": self.include_membership,
            "custom_fields": self.custom_fields,
        }
        return {key: value for key, value in values.items() if value is not None}

    def requests(
        self, startdate: str | None = None, enddate: str | None = None
    ) -> tuple[ExportRequest, ...]:
        """The exports one fire asks for with this window: one per stat for the contact
        data method (none for ``sends``: those come from Pinpointe), one otherwise."""
        if self.method == CONTACT_DATA_METHOD:
            return tuple(
                make_request(self.method, {"stat": stat}, self.format, startdate, enddate)
                for stat in self.stat or ()
            )
        return (make_request(self.method, self.method_options(), self.format, startdate, enddate),)

    @property
    def sends_days(self) -> int | None:
        """N for ``sends = "last-N-days"``."""
        found = _SENDS_RE.match(self.sends or "")
        return None if found is None else int(found[1])

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
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

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
        what = f"stat {','.join(self.stat or ())}"
        if self.sends is not None:
            what = f"every send of the {self.sends}"
        elif self.method != CONTACT_DATA_METHOD:
            what = f"{self.method} {describe(self.requests()[0])}"
        if self.format is not None and self.method == CONTACT_DATA_METHOD:
            what += f" ({self.format})"
        return f"export {self.name}: {what}, {when} UTC, window {window}"


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
    tuple[ExportSchedule, ...], Before(_array_of_tables), After(_unique_names)
]
"""The type of the config field ``export``: the tables, with unique names."""
