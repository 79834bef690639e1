"""Fire times and the date windows they ask for, in UTC (docs/schedules.md §2)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from inbox_poller.schedules.table import INTERVAL_EPOCH
from inbox_poller.schedules.windows import fire_times_between, window_for
from tests.schedules.samples import make_schedule, utc

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
    assert window_for(make_schedule(window=window), utc(fire)) == expected


def test_a_fixed_window_is_its_dates() -> None:
    fixed = make_schedule(window="fixed", start="20260101", end="20260401")
    assert window_for(fixed, utc("2027-05-05T05:05")) == ("20260101", "20260401")


def test_windows_are_utc_days_whatever_the_offset() -> None:
    daily = make_schedule()
    # 00:30 in Berlin (winter) is still the previous UTC day
    berlin = datetime(2026, 11, 29, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert window_for(daily, berlin) == ("20261127", "20261128")
    minus_five = datetime(2026, 11, 28, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert window_for(daily, minus_five) == ("20261128", "20261129")
    with pytest.raises(ValueError, match="aware datetime"):
        window_for(daily, datetime(2026, 11, 29, 3, 0))


@pytest.mark.parametrize("day", ["2026-03-28", "2026-10-24"])
def test_cron_fires_in_utc_across_dst_changes(day: str) -> None:
    schedule = make_schedule(cron="30 1 * * *")
    fires = fire_times_between(schedule, utc(f"{day}T00:00"), utc(f"{day}T00:00") + timedelta(4))
    assert [f.isoformat() for f in fires] == [
        (utc(f"{day}T01:30") + timedelta(days=n)).isoformat() for n in range(4)
    ]


# --- fire times --------------------------------------------------------------------


def test_fire_times_are_exclusive_of_after_and_inclusive_of_until() -> None:
    schedule = make_schedule()
    at_three = utc("2026-11-29T03:00")
    assert fire_times_between(schedule, at_three, at_three + timedelta(days=1)) == [
        at_three + timedelta(days=1)
    ]
    just_before = at_three - timedelta(microseconds=1)
    assert fire_times_between(schedule, just_before, at_three) == [at_three]
    assert fire_times_between(schedule, at_three, at_three) == []


@pytest.mark.parametrize("started", ["2026-11-29T00:00:00", "2026-11-29T07:13:42.5"])
def test_interval_schedules_are_anchored_at_the_epoch(started: str) -> None:
    six_hours = make_schedule(cron=None, every="6h")
    after = utc(started)
    fires = fire_times_between(six_hours, after, after + timedelta(days=1))
    assert len(fires) == 4
    assert {f.hour for f in fires} == {0, 6, 12, 18}
    assert all(f.minute == f.second == f.microsecond == 0 for f in fires)

    ninety = make_schedule(cron=None, every="90m")
    fires = fire_times_between(ninety, after, after + timedelta(days=3))
    assert len(fires) == 48
    assert all((f - INTERVAL_EPOCH).total_seconds() % 5400 == 0 for f in fires)

    weekly = make_schedule(cron=None, every="7d")
    fires = fire_times_between(weekly, after, after + timedelta(days=21))
    assert [f.strftime("%a %H:%M") for f in fires] == ["Sat 00:00"] * 3
