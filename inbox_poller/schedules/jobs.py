"""The APScheduler job the daemon registers per schedule; nothing here starts a scheduler.

APScheduler only decides when the daemon wakes up: a fire it drops as misfired is found
again through the last fire time (docs/schedules.md §3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inbox_poller.schedules.table import ExportSchedule

MISFIRE_GRACE_S = 3600
"""How late APScheduler may still run a fire; later ones are left to the ledger catch-up."""


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
