"""The APScheduler job definitions, checked against a real (paused) scheduler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from inbox_poller.schedules.jobs import scheduler_entries
from inbox_poller.schedules.table import INTERVAL_EPOCH
from inbox_poller.schedules.windows import fire_times_between
from tests.schedules.samples import load_schedules


def test_scheduler_entries_are_fixed_and_explicit(tmp_path: Path) -> None:
    daily, every_minute = load_schedules(
        tmp_path,
        [
            {"name": "daily", "stat": "1", "cron": "0 3 * * *"},
            {"name": "often", "stat": "2", "every": "60s"},
        ],
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


def test_apscheduler_accepts_the_entries_and_agrees_on_the_next_fire_time(
    tmp_path: Path,
) -> None:
    schedules = load_schedules(
        tmp_path,
        [
            {"name": "daily", "stat": "1", "cron": "0 3 * * *"},
            {"name": "often", "stat": "2", "every": "90s"},
        ],
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
