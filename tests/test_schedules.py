"""Scheduled exports: validation, windows, due fire times with an injected clock, and
de-duplication against the ledger (docs/schedules.md)."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import tomllib
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.schedulers.background import (
    BackgroundScheduler,
)
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, ConfigDict, ValidationError

from inbox_poller.errors import ConfigError
from inbox_poller.models import Export, ExportRequest, ExportState
from inbox_poller.schedules import (
    INTERVAL_EPOCH,
    DueSubmission,
    ExportSchedule,
    ExportSchedules,
    due_requests,
    fire_times_between,
    parse_schedules,
    scheduler_entries,
    should_submit,
    window_for,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "schedules.md"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _schedule(**fields: Any) -> ExportSchedule:
    raw: dict[str, Any] = {"name": "daily", "stat": "4711", "cron": "0 3 * * *"}
    raw.update(fields)
    return ExportSchedule.model_validate({k: v for k, v in raw.items() if v is not None})


# --- validation -------------------------------------------------------------------

INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"cron": "0 25 * * *"}, "export.0.cron", "not a valid crontab expression"),
    ({"cron": "0 3 * *"}, "export.0.cron", "expected 5 crontab fields"),
    ({"cron": "@daily"}, "export.0.cron", "expected 5 crontab fields"),
    ({"cron": "0 3 * * 1"}, "export.0.cron", "weekday field with names"),
    ({"cron": "0 3 * * */2"}, "export.0.cron", "weekday field with names"),
    ({"cron": "0 0 30 2 *"}, "export.0.cron", "never fires"),
    ({"every": "6h"}, "export.0", "exactly one of cron"),
    ({"cron": None}, "export.0", "exactly one of cron"),
    ({"cron": None, "every": "59s"}, "export.0.every", "from 60s to 366d"),
    ({"cron": None, "every": "367d"}, "export.0.every", "from 60s to 366d"),
    ({"cron": None, "every": "6 hours"}, "export.0.every", "a number and a unit"),
    ({"cron": None, "every": "1h30m"}, "export.0.every", "a number and a unit"),
    ({"window": "yesterday"}, "export.0.window", 'expected "previous-day"'),
    ({"window": "last-days"}, "export.0.window", 'expected "previous-day"'),
    ({"window": "last-0-days"}, "export.0.window", "from 1 to 366"),
    ({"window": "last-367-days"}, "export.0.window", "from 1 to 366"),
    ({"window": "fixed"}, "export.0", "needs start and end"),
    ({"window": "fixed", "start": "20260101"}, "export.0", "needs start and end"),
    ({"window": "fixed", "start": "20260201", "end": "20260201"}, "export.0", "end must be after"),
    ({"window": "fixed", "start": "20260201", "end": "20260101"}, "export.0", "end must be after"),
    ({"start": "20260101", "end": "20260201"}, "export.0", "only used with window"),
    ({"window": "fixed", "start": "20260230", "end": "20260301"}, "export.0.start", "real cal"),
    ({"window": "fixed", "start": "2026-01-01", "end": "20260301"}, "export.0.start", "YYYYMMDD"),
    ({"stat": "abc"}, "export.0.stat", "is not a stat ID"),
    ({"stat": ""}, "export.0.stat", "is not a stat ID"),
    ({"stat": True}, "export.0.stat", "is not a stat ID"),
    ({"stat": 12.5}, "export.0.stat", "is not a stat ID"),
    ({"stat": []}, "export.0.stat", "non-empty list"),
    ({"stat": ["4711", "x"]}, "export.0.stat", "'x' is not a stat ID"),
    ({"stat": ["4711", 4711]}, "export.0.stat", "listed twice"),
    ({"stat": None}, "export.0.stat", "this key is required"),
    ({"name": "Daily"}, "export.0.name", "a-z, 0-9"),
    ({"name": ""}, "export.0.name", "a-z, 0-9"),
    ({"enabled": True}, "export.0.enabled", "unknown key"),
]


@pytest.mark.parametrize(("fields", "key", "message"), INVALID)
def test_invalid_tables_name_the_key(fields: dict[str, Any], key: str, message: str) -> None:
    raw: dict[str, Any] = {"name": "daily", "stat": "4711", "cron": "0 3 * * *"}
    raw.update(fields)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        parse_schedules([raw])
    assert caught.value.key == key
    assert message in str(caught.value)


def test_the_index_of_the_bad_table_is_named() -> None:
    good = {"name": "a", "stat": "1", "cron": "0 3 * * *"}
    with pytest.raises(ConfigError, match=r"export\.1\.cron: not a valid crontab"):
        parse_schedules([good, {"name": "b", "stat": "1", "cron": "0 3 32 * *"}])


def test_duplicate_names_are_refused() -> None:
    table = {"name": "same", "stat": "1", "cron": "0 3 * * *"}
    with pytest.raises(ConfigError, match="'same' is used more than once") as caught:
        parse_schedules([table, {**table, "stat": "2"}])
    assert caught.value.key == "export"


def test_a_single_table_instead_of_an_array_is_explained() -> None:
    with pytest.raises(ConfigError, match=r"\[\[export\]\] table \(double brackets\)"):
        parse_schedules({"name": "a", "stat": "1", "cron": "0 3 * * *"})  # type: ignore[arg-type]


def test_values_are_normalised() -> None:
    (first, second) = parse_schedules(
        [
            {"name": "a", "stat": 4711, "cron": " 0   3 * *  mon-fri "},
            {
                "name": "b",
                "stat": [" 1 ", 2],
                "every": "90m",
                "window": "fixed",
                "start": date(2026, 1, 1),
                "end": 20260401,
            },
        ]
    )
    assert first.stat == ("4711",)
    assert first.cron == "0 3 * * mon-fri"
    assert first.window == "previous-day"  # the default
    assert (first.every, first.every_s, first.window_days) == (None, None, 1)
    assert second.stat == ("1", "2")
    assert (second.every_s, second.start, second.end) == (5400, "20260101", "20260401")
    assert second.window_days is None
    with pytest.raises(ValidationError):
        first.name = "other"


def test_a_schedule_is_a_field_of_a_config_model_with_indexed_errors() -> None:
    class Holder(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        export: ExportSchedules = ()

    assert Holder().export == ()
    holder = Holder.model_validate({"export": [{"name": "a", "stat": "1", "every": "1d"}]})
    assert holder.export[0].every_s == 86400
    with pytest.raises(ValidationError) as caught:
        Holder.model_validate({"export": [{"name": "a", "stat": "1", "cron": "x 3 * * *"}]})
    assert caught.value.errors()[0]["loc"] == ("export", 0, "cron")


def test_the_documented_example_is_valid() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    schedules = parse_schedules(tomllib.loads(block[1])["export"])
    assert [s.name for s in schedules] == [
        "daily-contacts",
        "weekly-campaigns",
        "full-snapshot",
        "q1-2026",
    ]
    assert schedules[1].describe() == (
        "export weekly-campaigns: stat 4712,4713, cron '30 4 * * mon' UTC, window last-7-days"
    )


# --- windows ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "fire", "expected"),
    [
        ("previous-day", "2026-11-29T03:00", ("20261128", "20261129")),
        ("previous-day", "2026-11-29T00:00", ("20261128", "20261129")),
        ("previous-day", "2026-11-29T23:59:59", ("20261128", "20261129")),
        ("previous-day", "2027-01-01T03:00", ("20261231", "20270101")),
        ("previous-day", "2026-03-01T03:00", ("20260228", "20260301")),
        ("previous-day", "2028-03-01T03:00", ("20280229", "20280301")),
        ("last-1-days", "2026-11-29T03:00", ("20261128", "20261129")),
        ("last-7-days", "2026-11-29T03:00", ("20261122", "20261129")),
        ("last-7-days", "2026-03-03T03:00", ("20260224", "20260303")),
        ("last-7-days", "2027-01-02T03:00", ("20261226", "20270102")),
        ("last-366-days", "2029-01-01T00:00", ("20280101", "20290101")),
        ("none", "2026-11-29T03:00", (None, None)),
    ],
)
def test_window_for(window: str, fire: str, expected: tuple[str | None, str | None]) -> None:
    assert window_for(_schedule(window=window), _utc(fire)) == expected


def test_a_fixed_window_is_its_dates() -> None:
    fixed = _schedule(window="fixed", start="20260101", end="20260401")
    assert window_for(fixed, _utc("2027-05-05T05:05")) == ("20260101", "20260401")


def test_windows_are_utc_days_whatever_the_offset() -> None:
    daily = _schedule()
    # 00:30 in Berlin (winter) is still the previous UTC day
    berlin = datetime(2026, 11, 29, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert window_for(daily, berlin) == ("20261127", "20261128")
    minus_five = datetime(2026, 11, 28, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert window_for(daily, minus_five) == ("20261128", "20261129")
    with pytest.raises(ValueError, match="aware datetime"):
        window_for(daily, datetime(2026, 11, 29, 3, 0))


@pytest.mark.parametrize("day", ["2026-03-28", "2026-10-24"])
def test_cron_fires_in_utc_across_dst_changes(day: str) -> None:
    schedule = _schedule(cron="30 1 * * *")
    fires = fire_times_between(schedule, _utc(f"{day}T00:00"), _utc(f"{day}T00:00") + timedelta(4))
    assert [f.isoformat() for f in fires] == [
        (_utc(f"{day}T01:30") + timedelta(days=n)).isoformat() for n in range(4)
    ]


# --- fire times --------------------------------------------------------------------


def test_fire_times_are_exclusive_of_after_and_inclusive_of_until() -> None:
    schedule = _schedule()
    at_three = _utc("2026-11-29T03:00")
    assert fire_times_between(schedule, at_three, at_three + timedelta(days=1)) == [
        at_three + timedelta(days=1)
    ]
    just_before = at_three - timedelta(microseconds=1)
    assert fire_times_between(schedule, just_before, at_three) == [at_three]
    assert fire_times_between(schedule, at_three, at_three) == []


@pytest.mark.parametrize("started", ["2026-11-29T00:00:00", "2026-11-29T07:13:42.5"])
def test_interval_schedules_are_anchored_at_the_epoch(started: str) -> None:
    six_hours = _schedule(cron=None, every="6h")
    after = _utc(started)
    fires = fire_times_between(six_hours, after, after + timedelta(days=1))
    assert len(fires) == 4
    assert {f.hour for f in fires} == {0, 6, 12, 18}
    assert all(f.minute == f.second == f.microsecond == 0 for f in fires)

    ninety = _schedule(cron=None, every="90m")
    fires = fire_times_between(ninety, after, after + timedelta(days=3))
    assert len(fires) == 48
    assert all((f - INTERVAL_EPOCH).total_seconds() % 5400 == 0 for f in fires)

    weekly = _schedule(cron=None, every="7d")
    fires = fire_times_between(weekly, after, after + timedelta(days=21))
    assert [f.strftime("%a %H:%M") for f in fires] == ["Sat 00:00"] * 3


# --- the ledger, simulated -----------------------------------------------------------


@dataclasses.dataclass
class _Ledger:
    """Just enough of the daemon's submit pass to test the rules together."""

    exports: list[Export] = dataclasses.field(default_factory=list)
    last_fire: dict[str, datetime | None] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def run_pass(self, schedules: Sequence[ExportSchedule], now: datetime) -> list[DueSubmission]:
        submitted = []
        for due in due_requests(schedules, self.last_fire, now):
            ok, reason = should_submit(due, self.exports)
            if not ok:
                self.skipped.append(reason)
                continue
            self.exports.append(_export(len(self.exports) + 1, due.request, created=now))
            submitted.append(due)
        for schedule in schedules:
            self.last_fire[schedule.name] = now
        return submitted

    def settle(self, state: ExportState = ExportState.ARCHIVED) -> None:
        self.exports = [dataclasses.replace(e, state=state) for e in self.exports]

    def windows(self) -> list[tuple[str, str | None, str | None]]:
        return [(e.request.stat, e.request.startdate, e.request.enddate) for e in self.exports]


def _export(
    export_id: int,
    request: ExportRequest,
    state: ExportState = ExportState.SUBMITTED,
    *,
    created: datetime = INTERVAL_EPOCH,
    reason: str | None = None,
) -> Export:
    return Export(export_id, request, state, created, created, reason=reason)


def _ticks(start: datetime, end: datetime, step: timedelta) -> Iterable[datetime]:
    now = start
    while now <= end:
        yield now
        now += step


@pytest.mark.parametrize("cron", ["0 3 * * *", "0 * * * *", "*/20 * * * *"])
def test_a_cron_export_fires_once_per_window(cron: str) -> None:
    schedules = [_schedule(cron=cron)]
    start = _utc("2026-11-28T00:00:01")
    ledger = _Ledger(last_fire={"daily": start})
    for now in _ticks(start, _utc("2026-11-30T12:00"), timedelta(minutes=7)):
        ledger.run_pass(schedules, now)
        if now.hour == 12:
            ledger.settle()  # some exports finish between fires
    assert ledger.windows() == [
        ("4711", "20261127", "20261128"),
        ("4711", "20261128", "20261129"),
        ("4711", "20261129", "20261130"),
    ]
    if cron != "0 3 * * *":
        # the later fires of each day asked again and were turned away by the ledger
        assert any("is submitted" in reason for reason in ledger.skipped)
        assert any("already exported" in reason for reason in ledger.skipped)


def test_after_three_days_down_each_missed_window_is_submitted_once() -> None:
    schedules = [_schedule()]
    ledger = _Ledger(last_fire={"daily": _utc("2026-11-26T03:00:05")})
    now = _utc("2026-11-29T10:00")
    due = ledger.run_pass(schedules, now)
    assert [(d.fire_time.isoformat(), d.startdate, d.enddate) for d in due] == [
        ("2026-11-27T03:00:00+00:00", "20261126", "20261127"),
        ("2026-11-28T03:00:00+00:00", "20261127", "20261128"),
        ("2026-11-29T03:00:00+00:00", "20261128", "20261129"),
    ]
    assert ledger.run_pass(schedules, now + timedelta(minutes=1)) == []
    # a crash before the last fire time was recorded: the same windows come back, and
    # the ledger turns every one of them away
    ledger.last_fire["daily"] = _utc("2026-11-26T03:00:05")
    assert len(due_requests(schedules, ledger.last_fire, now)) == 3
    assert ledger.run_pass(schedules, now) == []
    assert len(ledger.exports) == 3


def test_missed_fires_of_one_window_are_coalesced() -> None:
    hourly = _schedule(cron="0 * * * *", stat=["1", "2"])
    due = due_requests([hourly], {"daily": _utc("2026-11-26T23:30")}, _utc("2026-11-29T10:10"))
    assert [(d.stat, d.startdate, d.fire_time.hour) for d in due] == [
        ("1", "20261126", 23),
        ("2", "20261126", 23),
        ("1", "20261127", 23),
        ("2", "20261127", 23),
        ("1", "20261128", 10),
        ("2", "20261128", 10),
    ]
    snapshot = _schedule(cron="0 * * * *", window="none")
    due = due_requests([snapshot], {"daily": _utc("2026-11-26T23:30")}, _utc("2026-11-29T10:10"))
    assert [(d.startdate, d.enddate, d.fire_time) for d in due] == [
        (None, None, _utc("2026-11-29T10:00"))
    ]


def test_two_schedules_asking_for_the_same_export_yield_one() -> None:
    schedules = [_schedule(name="b", cron="0 6 * * *"), _schedule(name="a")]
    last = {"a": _utc("2026-11-29T00:00"), "b": _utc("2026-11-29T00:00")}
    due = due_requests(schedules, last, _utc("2026-11-29T07:00"))
    assert [(d.schedule_name, d.startdate, d.fire_time.hour) for d in due] == [("b", "20261128", 6)]


@pytest.mark.parametrize(
    ("cron", "now", "fire"),
    [
        ("0 3 * * *", "2026-11-29T10:00", "2026-11-29T03:00"),
        ("0 3 * * *", "2026-11-29T03:00", "2026-11-29T03:00"),
        ("0 3 * * *", "2026-11-29T02:59", "2026-11-28T03:00"),
        ("0 4 1 * *", "2026-11-29T02:59", "2026-11-01T04:00"),
        ("0 0 29 feb *", "2027-06-01T00:00", "2024-02-29T00:00"),
    ],
)
def test_first_start_submits_only_the_latest_window(cron: str, now: str, fire: str) -> None:
    due = due_requests([_schedule(cron=cron)], {}, _utc(now))
    assert [d.fire_time for d in due] == [_utc(fire)]
    assert due_requests([_schedule(cron=cron)], {"daily": None}, _utc(now)) == due


def test_a_fixed_window_waits_for_its_end() -> None:
    quarter = _schedule(window="fixed", start="20260101", end="20260401")
    assert due_requests([quarter], {}, _utc("2026-03-31T23:00")) == []
    assert (
        due_requests([quarter], {"daily": _utc("2026-03-01T00:00")}, _utc("2026-03-31T23:00")) == []
    )
    due = due_requests([quarter], {"daily": _utc("2026-03-01T00:00")}, _utc("2026-04-05T00:00"))
    assert [(d.startdate, d.enddate, d.fire_time) for d in due] == [
        ("20260101", "20260401", _utc("2026-04-04T03:00"))
    ]
    at_end = _schedule(cron="0 0 * * *", window="fixed", start="20260101", end="20260401")
    due = due_requests([at_end], {}, _utc("2026-04-01T00:00"))
    assert [d.fire_time for d in due] == [_utc("2026-04-01T00:00")]


def test_the_catch_up_limit_keeps_the_most_recent_windows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daily = _schedule()
    now = _utc("2026-11-29T10:00")
    with caplog.at_level(logging.WARNING, logger="inbox_poller.schedules"):
        due = due_requests([daily], {"daily": now - timedelta(days=30)}, now, catch_up_limit=5)
    assert [d.startdate for d in due] == [
        "20261124",
        "20261125",
        "20261126",
        "20261127",
        "20261128",
    ]
    assert "export daily: idle since 2026-10-30T10:00:00+00:00" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inbox_poller.schedules"):
        due = due_requests([daily], {"daily": now - timedelta(days=5)}, now, catch_up_limit=5)
    assert len(due) == 5
    assert caplog.text == ""
    with pytest.raises(ValueError, match="at least 1"):
        due_requests([daily], {}, now, catch_up_limit=0)


def test_a_long_downtime_of_a_dense_schedule_is_cheap() -> None:
    every_minute = _schedule(cron="* * * * *")
    now = _utc("2026-11-29T10:00")
    started = time.perf_counter()
    due = due_requests([every_minute], {"daily": now - timedelta(days=365)}, now)
    elapsed = time.perf_counter() - started
    assert [d.enddate for d in due] == [f"202611{day}" for day in range(23, 30)]
    assert elapsed < 2.0, f"{elapsed:.2f}s"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due_requests([_schedule()], {}, datetime(2026, 11, 29))
    with pytest.raises(ValueError, match="last_fire must be an aware"):
        due_requests([_schedule()], {"daily": datetime(2026, 11, 29)}, _utc("2026-11-29T00:00"))


# --- de-duplication ----------------------------------------------------------------

DUE = DueSubmission("daily", _utc("2026-11-29T03:00"), "4711", "20261128", "20261129")


@pytest.mark.parametrize(
    ("state", "submit", "reason"),
    [
        (ExportState.SUBMITTING, False, "export 7 for the same stat and window is submitting"),
        (ExportState.SUBMITTED, False, "is submitted"),
        (ExportState.SUBMIT_UNKNOWN, False, "is submit_unknown"),
        (ExportState.NOTIFIED, False, "is notified"),
        (ExportState.DOWNLOADING, False, "is downloading"),
        (ExportState.VERIFIED, False, "is verified"),
        (ExportState.ARCHIVED, False, "already exported as export 7 (archived)"),
        (ExportState.ACKNOWLEDGED, False, "already exported as export 7 (acknowledged)"),
        (ExportState.SUBMIT_FAILED, True, "resubmitting: export 7 ended in submit_failed (boom)"),
        (ExportState.LINK_EXPIRED, True, "resubmitting: export 7 ended in link_expired (boom)"),
        (ExportState.FAILED, True, "resubmitting: export 7 ended in failed (boom)"),
    ],
)
def test_should_submit_against_each_state(state: ExportState, submit: bool, reason: str) -> None:
    ledger = [_export(7, DUE.request, state, reason="boom")]
    decision, why = should_submit(DUE, ledger)
    assert decision is submit
    assert reason in why


def test_only_the_same_request_counts() -> None:
    others = [
        _export(1, dataclasses.replace(DUE.request, stat="4712"), ExportState.ARCHIVED),
        _export(2, dataclasses.replace(DUE.request, startdate="20261127"), ExportState.SUBMITTED),
        _export(3, dataclasses.replace(DUE.request, enddate=None), ExportState.SUBMITTED),
        _export(4, dataclasses.replace(DUE.request, method="Other"), ExportState.ARCHIVED),
    ]
    assert should_submit(DUE, others) == (True, "no export of this stat and window yet")
    assert should_submit(DUE, []) == (True, "no export of this stat and window yet")


def test_a_pending_export_wins_over_failed_ones_and_failures_are_bounded() -> None:
    failed = [_export(n, DUE.request, ExportState.FAILED, reason=f"r{n}") for n in (1, 2)]
    assert should_submit(DUE, failed) == (True, "resubmitting: export 2 ended in failed (r2)")
    assert should_submit(DUE, [*failed, _export(3, DUE.request)])[0] is False
    third = _export(3, DUE.request, ExportState.LINK_EXPIRED)
    decision, why = should_submit(DUE, [*failed, third])
    assert decision is False
    assert "3 exports of this stat and window failed (the last is export 3)" in why
    assert should_submit(DUE, [*failed, third], max_failed=4)[0] is True


def test_an_open_window_wants_fresh_data_at_each_fire() -> None:
    due = dataclasses.replace(DUE, startdate=None, enddate=None)
    before, after = due.fire_time - timedelta(hours=6), due.fire_time + timedelta(seconds=1)
    old = _export(1, due.request, ExportState.ACKNOWLEDGED, created=before)
    assert should_submit(due, [old])[0] is True
    new = _export(2, due.request, ExportState.ARCHIVED, created=after)
    assert should_submit(due, [old, new]) == (False, "already exported as export 2 (archived)")
    in_flight = _export(3, due.request, ExportState.DOWNLOADING, created=before)
    assert should_submit(due, [old, in_flight])[0] is False
    old_failures = [_export(n, due.request, ExportState.FAILED, created=before) for n in (4, 5, 6)]
    assert should_submit(due, old_failures) == (True, "no export of this stat and window yet")


# --- APScheduler job definitions ---------------------------------------------------


def test_scheduler_entries_are_fixed_and_explicit() -> None:
    daily, every_minute = parse_schedules(
        [
            {"name": "daily", "stat": "1", "cron": "0 3 * * *"},
            {"name": "often", "stat": "2", "every": "60s"},
        ]
    )
    first, second = scheduler_entries([daily, every_minute])
    assert first.add_job_kwargs() == {
        "id": "export:daily",
        "name": "export:daily",
        "trigger": first.trigger,
        "misfire_grace_time": 3600,
        "coalesce": True,
        "max_instances": 1,
        "replace_existing": True,
    }
    assert isinstance(first.trigger, CronTrigger)
    assert str(first.trigger.timezone) == "UTC"
    assert isinstance(second.trigger, IntervalTrigger)
    assert second.trigger.start_date == INTERVAL_EPOCH
    assert (second.id, second.misfire_grace_time) == ("export:often", 60)


def test_apscheduler_accepts_the_entries_and_agrees_on_the_next_fire_time() -> None:
    schedules = parse_schedules(
        [
            {"name": "daily", "stat": "1", "cron": "0 3 * * *"},
            {"name": "often", "stat": "2", "every": "90s"},
        ]
    )
    scheduler = BackgroundScheduler(timezone=UTC)
    for entry in scheduler_entries(schedules):
        scheduler.add_job(print, args=(entry.schedule_name,), **entry.add_job_kwargs())
        # re-adding at a restart replaces instead of duplicating
        scheduler.add_job(print, args=(entry.schedule_name,), **entry.add_job_kwargs())
    scheduler.start(paused=True)
    try:
        before = datetime.now(UTC)
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert sorted(jobs) == ["export:daily", "export:often"]
        for schedule in schedules:
            job = jobs[f"export:{schedule.name}"]
            assert (job.coalesce, job.max_instances) == (True, 1)
            expected = fire_times_between(
                schedule, before - timedelta(seconds=2), before + timedelta(days=1)
            )
            assert job.next_run_time in expected[:2]
    finally:
        scheduler.shutdown(wait=False)
