"""Run the hooks of archived exports: each at least once, retried with back-off.

A run is queued in the ledger with the export's move to ``archived``
(``Store.mark_archived``), and :meth:`HookDispatcher.run_due` runs what is due, one run
at a time: the daemon calls it from its own thread (``service.hookrunner``), woken by
each archived export, and ``run --once`` after its pass. A run that fails or times out
is due again after :func:`retry_delay_s` (10 s, doubling, at most 5 minutes), whatever
restarts happen meanwhile; archiving and acknowledging never wait for it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from inbox_poller.archive_reader import MANIFEST_NAME
from inbox_poller.hooks.environment import BucketArchive, hook_environment
from inbox_poller.hooks.process import HookResult, run_hook
from inbox_poller.models import HookRun, utc_now

if TYPE_CHECKING:
    from inbox_poller.ledger.store import Store

logger = logging.getLogger("inbox_poller.loop")

ON_ARCHIVED = "on_archived"
FIRST_RETRY_S = 10.0
MAX_RETRY_S = 300.0
CLAIM_MARGIN_S = 60.0
"""On a shared ledger a run is claimed for the hook's timeout and this much more: a
daemon that dies mid-run leaves it to another once that time has passed."""


def retry_delay_s(failures: int) -> float:
    """Return how long to wait after the *failures*-th failed run (1, 2, ...)."""
    return float(min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class HookSettings:
    """What running hooks needs from the configuration (``[hooks]``)."""

    on_archived: tuple[str, ...]
    """The program and its arguments; empty for none."""
    timeout_s: float

    @property
    def queued(self) -> tuple[str, ...]:
        """The hooks to queue for each archived export."""
        return (ON_ARCHIVED,) if self.on_archived else ()


class HookDispatcher:
    """Run the due hook runs the ledger holds, and record how each ended."""

    def __init__(
        self,
        store: Store,
        archive_dir: Path,
        settings: HookSettings,
        *,
        bucket: BucketArchive | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.archive_dir = archive_dir
        self.bucket = bucket
        """The S3 archive (``[archive] url``): hooks get the payload's URL, not a path."""
        self.settings = settings
        self.clock = clock

    def next_due(self) -> datetime | None:
        """Return when the next pending run is due (None when nothing is pending)."""
        pending = self.store.pending_hook_runs()
        return pending[0].next_at if pending else None

    def run_due(self, stop: threading.Event | None = None) -> list[str]:
        """Run every pending run that is due, one after another; return the failures.

        Stops early when *stop* is set; a run it interrupts stays pending and is not
        counted as a failure.
        """
        failures: list[str] = []
        synced = False
        for run in self.store.pending_hook_runs():
            if stop is not None and stop.is_set():
                break
            now = self.clock()
            if run.next_at > now:
                break  # sorted by next_at: nothing after it is due either
            if self.store.shared and not self.store.claim_hook_run(
                run.export_id,
                run.hook,
                now,
                now + timedelta(seconds=self.settings.timeout_s + CLAIM_MARGIN_S),
            ):
                continue  # another daemon runs it
            if not synced:  # a run is queued by a relaxed commit (docs/reliability.md §6.1)
                self.store.sync()
                synced = True
            failure = self._run(run, stop)
            if failure:
                failures.append(failure)
        return failures

    def _command(self, hook: str) -> tuple[str, ...]:
        return self.settings.on_archived if hook == ON_ARCHIVED else ()

    def _run(self, run: HookRun, stop: threading.Event | None) -> str:
        extra = {"export_id": run.export_id, "job_id": run.job_id}
        command = self._command(run.hook)
        if not command:
            reason = f"[hooks] {run.hook} is no longer configured"
            self.store.mark_hook_skipped(run.export_id, run.hook, reason, self.clock())
            logger.warning(
                "export %d (job %s): hook %s not run: %s",
                run.export_id,
                run.job_id,
                run.hook,
                reason,
                extra=extra,
            )
            return ""
        result = self._execute(run, command, stop)
        if result.interrupted:
            if self.store.shared:  # due again at once, for whichever daemon runs next
                self.store.release_hook_run(run.export_id, run.hook, self.clock())
            logger.info(
                "export %d (job %s): hook %s stopped by shutdown; it runs again at next start",
                run.export_id,
                run.job_id,
                run.hook,
                extra=extra,
            )
            return ""
        if result.ok:
            self.store.mark_hook_done(run.export_id, run.hook, self.clock())
            logger.info(
                "export %d (job %s): hook %s done in %.1fs",
                run.export_id,
                run.job_id,
                run.hook,
                result.duration_s,
                extra=extra,
            )
            return ""
        failures = run.attempts + 1
        delay_s = retry_delay_s(failures)
        self.store.mark_hook_failed(
            run.export_id, run.hook, result.reason, self.clock() + timedelta(seconds=delay_s)
        )
        logger.error(
            "export %d (job %s): hook %s failed (%d time%s): %s; next try in %.0fs",
            run.export_id,
            run.job_id,
            run.hook,
            failures,
            "" if failures == 1 else "s",
            result.reason,
            delay_s,
            extra=extra,
        )
        return f"hook {run.hook} for job {run.job_id}: {result.reason}"

    def _execute(
        self, run: HookRun, command: tuple[str, ...], stop: threading.Event | None
    ) -> HookResult:
        try:
            manifest = json.loads(run.payload)
        except ValueError:
            manifest = {}
        env = hook_environment(
            run.hook,
            manifest if isinstance(manifest, dict) else {},
            archive_dir=None if self.bucket else self.archive_dir,
            manifest_path=None if self.bucket else self.archive_dir / MANIFEST_NAME,
            bucket=self.bucket,
            attempt=run.attempts + 1,
        )
        return run_hook(
            command,
            stdin=run.payload.encode("utf-8") + b"\n",
            env=env,
            timeout_s=self.settings.timeout_s,
            stop=stop,
        )
