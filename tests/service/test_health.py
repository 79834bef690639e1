"""The health judgement behind STATUS= and ``inbox-poller status``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inbox_poller.models import Export, ExportRequest, ExportState, HookRun, HookState
from inbox_poller.service.health import assess, format_age

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _export(number: int, state: ExportState, age: timedelta) -> Export:
    at = NOW - age
    return Export(
        number, ExportRequest("1"), state, at, at, job_id=str(1000 + number), submitted_at=at
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3660, "1h01m"), (90000, "1d01h")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_healthy_summary() -> None:
    exports = [
        _export(1, ExportState.SUBMITTED, timedelta(minutes=12)),
        _export(2, ExportState.NOTIFIED, timedelta(minutes=3)),
        _export(3, ExportState.ACKNOWLEDGED, timedelta(days=3)),
    ]
    health = assess(
        exports, NOW - timedelta(seconds=20), NOW, poll_interval_s=60, notify_deadline_s=7200
    )
    assert health.healthy
    assert health.status_line() == "2 pending exports, oldest 12m; last poll 20s ago"
    assert health.counts == {"submitted": 1, "notified": 1, "acknowledged": 1}


def test_stale_poll_and_overdue_export_are_unhealthy() -> None:
    exports = [_export(1, ExportState.SUBMITTED, timedelta(hours=3))]
    health = assess(
        exports, NOW - timedelta(minutes=4), NOW, poll_interval_s=60, notify_deadline_s=7200
    )
    assert not health.healthy
    line = health.status_line()
    assert "no successful mailbox poll for 4m" in line
    assert "1 export(s) past the notification deadline (job 1001)" in line


def test_never_polled_is_unhealthy_and_empty_ledger_is_fine_otherwise() -> None:
    health = assess([], None, NOW, poll_interval_s=60, notify_deadline_s=7200)
    assert health.status_line() == (
        "0 pending exports; mailbox not read yet; "
        "UNHEALTHY: the mailbox has not been read successfully yet"
    )
    fine = assess([], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200)
    assert fine.healthy


def test_archived_mail_that_cannot_be_acknowledged_is_unhealthy_with_the_reason() -> None:
    reason = "IMAP x:993: create folder 'Processed' failed: Invalid mailbox name"
    health = assess([], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200, ack_problem=reason)
    assert not health.healthy
    assert health.problems == (f"archived mail cannot be acknowledged: {reason}",)
    assert reason in health.status_line()


def _run(attempts: int, error: str | None = None) -> HookRun:
    state = HookState.PENDING
    return HookRun(7, "1007", "on_archived", "{}", state, attempts, NOW, error, NOW, None)


def test_a_failing_hook_is_unhealthy_and_one_not_run_yet_is_not() -> None:
    polled = NOW - timedelta(seconds=20)
    waiting = assess(
        [], polled, NOW, poll_interval_s=60, notify_deadline_s=7200, hook_runs=[_run(0)]
    )
    assert waiting.healthy
    failing = assess(
        [],
        polled,
        NOW,
        poll_interval_s=60,
        notify_deadline_s=7200,
        hook_runs=[_run(0), _run(3, "exit 1: no route"), _run(1, "timed out after 300s (killed)")],
    )
    assert failing.problems == (
        "2 hook run(s) failing (job 1007: on_archived failed 3 time(s): exit 1: no route)",
    )
