"""What is due with an injected clock: coalescing, downtime, first start, the catch-up
limit; and, with a simulated ledger, each window submitted once (docs/schedules.md §3)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import pytest

from inbox_poller.models import Export, ExportState
from inbox_poller.schedules.due import DueSubmission, due_requests
from inbox_poller.schedules.duplicates import should_submit
from inbox_poller.schedules.table import ExportSchedule
from tests.schedules.samples import make_export, make_schedule, utc

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
            self.exports.append(make_export(len(self.exports) + 1, due.request, created=now))
            submitted.append(due)
        for schedule in schedules:
            self.last_fire[schedule.name] = now
        return submitted

    def settle(self, state: ExportState = ExportState.ARCHIVED) -> None:
        self.exports = [dataclasses.replace(e, state=state) for e in self.exports]

    def windows(self) -> list[tuple[str, str | None, str | None]]:
        return [(e.request.stat, e.request.startdate, e.request.enddate) for e in self.exports]


def _ticks(start: datetime, end: datetime, step: timedelta) -> Iterable[datetime]:
    now = start
    while now <= end:
        yield now
        now += step


@pytest.mark.parametrize("cron", ["0 3 * * *", "0 * * * *", "*/20 * * * *"])
def test_a_cron_export_fires_once_per_window(cron: str) -> None:
    schedules = [make_schedule(cron=cron)]
    start = utc("2026-11-28T00:00:01")
    ledger = _Ledger(last_fire={"daily": start})
    for now in _ticks(start, utc("2026-11-30T12:00"), timedelta(minutes=7)):
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
    schedules = [make_schedule()]
    ledger = _Ledger(last_fire={"daily": utc("2026-11-26T03:00:05")})
    now = utc("2026-11-29T10:00")
    due = ledger.run_pass(schedules, now)
    assert [(d.fire_time.isoformat(), d.startdate, d.enddate) for d in due] == [
        ("2026-11-27T03:00:00+00:00", "20261126", "20261127"),
        ("2026-11-28T03:00:00+00:00", "20261127", "20261128"),
        ("2026-11-29T03:00:00+00:00", "20261128", "20261129"),
    ]
    assert ledger.run_pass(schedules, now + timedelta(minutes=1)) == []
    # a crash before the last fire time was recorded: the same windows come back, and
    # the ledger turns every one of them away
    ledger.last_fire["daily"] = utc("2026-11-26T03:00:05")
    assert len(due_requests(schedules, ledger.last_fire, now)) == 3
    assert ledger.run_pass(schedules, now) == []
    assert len(ledger.exports) == 3


def test_missed_fires_of_one_window_are_coalesced() -> None:
    hourly = make_schedule(cron="0 * * * *", stat=["1", "2"])
    due = due_requests([hourly], {"daily": utc("2026-11-26T23:30")}, utc("2026-11-29T10:10"))
    assert [(d.stat, d.startdate, d.fire_time.hour) for d in due] == [
        ("1", "20261126", 23),
        ("2", "20261126", 23),
        ("1", "20261127", 23),
        ("2", "20261127", 23),
        ("1", "20261128", 10),
        ("2", "20261128", 10),
    ]
    snapshot = make_schedule(cron="0 * * * *", window="none")
    due = due_requests([snapshot], {"daily": utc("2026-11-26T23:30")}, utc("2026-11-29T10:10"))
    assert [(d.startdate, d.enddate, d.fire_time) for d in due] == [
        (None, None, utc("2026-11-29T10:00"))
    ]


def test_two_schedules_asking_for_the_same_export_yield_one() -> None:
    schedules = [make_schedule(name="b", cron="0 6 * * *"), make_schedule(name="a")]
    last = {"a": utc("2026-11-29T00:00"), "b": utc("2026-11-29T00:00")}
    due = due_requests(schedules, last, utc("2026-11-29T07:00"))
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
    due = due_requests([make_schedule(cron=cron)], {}, utc(now))
    assert [d.fire_time for d in due] == [utc(fire)]
    assert due_requests([make_schedule(cron=cron)], {"daily": None}, utc(now)) == due


def test_a_fixed_window_waits_for_its_end() -> None:
    quarter = make_schedule(window="fixed", start="20260101", end="20260401")
    assert due_requests([quarter], {}, utc("2026-03-31T23:00")) == []
    assert (
        due_requests([quarter], {"daily": utc("2026-03-01T00:00")}, utc("2026-03-31T23:00")) == []
    )
    due = due_requests([quarter], {"daily": utc("2026-03-01T00:00")}, utc("2026-04-05T00:00"))
    assert [(d.startdate, d.enddate, d.fire_time) for d in due] == [
        ("20260101", "20260401", utc("2026-04-04T03:00"))
    ]
    at_end = make_schedule(cron="0 0 * * *", window="fixed", start="20260101", end="20260401")
    due = due_requests([at_end], {}, utc("2026-04-01T00:00"))
    assert [d.fire_time for d in due] == [utc("2026-04-01T00:00")]


def test_the_catch_up_limit_keeps_the_most_recent_windows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    daily = make_schedule()
    now = utc("2026-11-29T10:00")
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
    every_minute = make_schedule(cron="* * * * *")
    now = utc("2026-11-29T10:00")
    started = time.perf_counter()
    due = due_requests([every_minute], {"daily": now - timedelta(days=365)}, now)
    elapsed = time.perf_counter() - started
    assert [d.enddate for d in due] == [f"202611{day}" for day in range(23, 30)]
    assert elapsed < 2.0, f"{elapsed:.2f}s"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due_requests([make_schedule()], {}, datetime(2026, 11, 29))
    with pytest.raises(ValueError, match="last_fire must be an aware"):
        due_requests([make_schedule()], {"daily": datetime(2026, 11, 29)}, utc("2026-11-29T00:00"))
