"""The health judgement behind STATUS= and ``inbox-poller status``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from inbox_poller.ledger.keys import LAST_RUN_KEY
from inbox_poller.models import Export, ExportRequest, ExportState, HookRun, HookState
from inbox_poller.service.health import (
    DAEMON_STARTED_KEY,
    assess,
    format_age,
    run_mode,
    utc_iso,
)

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


def test_a_refused_login_is_a_problem_at_once() -> None:
    reason = (
        "OAuth2 refresh token refused (expired, revoked or replaced): run `inbox-poller auth login`"
    )
    health = assess([], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200, login_problem=reason)
    assert not health.healthy
    assert health.problems == (f"mailbox login: {reason}",)
    assert "run `inbox-poller auth login`" in health.status_line()


@pytest.mark.parametrize(
    "state", [ExportState.SUBMIT_FAILED, ExportState.FAILED, ExportState.LINK_EXPIRED]
)
def test_a_failure_in_the_last_24_hours_is_unhealthy_with_its_reason(state: ExportState) -> None:
    failed = replace(
        _export(1, state, timedelta(hours=23)), reason="Pinpointe said FAILED: bad stat"
    )
    health = assess([failed], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200)
    assert not health.healthy
    assert health.recent_failures == 1
    assert health.problems == (
        f"1 export(s) failed in the last 24h (job 1001 {state.value}: "
        "Pinpointe said FAILED: bad stat)",
    )


def test_a_failure_older_than_24_hours_no_longer_counts() -> None:
    old = _export(1, ExportState.FAILED, timedelta(hours=25))
    health = assess([old], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200)
    assert health.healthy and health.recent_failures == 0


def test_many_failures_name_a_few_and_count_all() -> None:
    failed = [_export(n, ExportState.SUBMIT_FAILED, timedelta(hours=1)) for n in range(1, 6)]
    (problem,) = assess(failed, NOW, NOW, poll_interval_s=60, notify_deadline_s=7200).problems
    assert problem.startswith("5 export(s) failed in the last 24h (job 1001 submit_failed, ")
    assert problem.endswith(" …)") and "1004" not in problem


def test_the_sample_for_the_gauges_carries_absolute_times() -> None:
    exports = [
        _export(1, ExportState.SUBMITTED, timedelta(hours=3)),
        _export(2, ExportState.FAILED, timedelta(hours=1)),
    ]
    last_poll = NOW - timedelta(seconds=20)
    sample = assess(exports, last_poll, NOW, poll_interval_s=60, notify_deadline_s=7200).sample()
    assert sample.oldest_waiting_at == NOW - timedelta(hours=3)
    assert sample.last_pass_at == last_poll
    assert (sample.overdue, sample.recent_failures, sample.healthy) == (1, 1, False)
    assert sample.counts == {"submitted": 1, "failed": 1}


def test_the_mode_is_whichever_started_last() -> None:
    run = json.dumps({"at": (NOW - timedelta(hours=1)).isoformat(), "ok": True, "failed": []})
    assert run_mode({})[0] == "daemon"
    assert run_mode({LAST_RUN_KEY: run})[0] == "once"
    earlier = (NOW - timedelta(hours=2)).isoformat()
    later = NOW.isoformat()
    assert run_mode({LAST_RUN_KEY: run, DAEMON_STARTED_KEY: earlier})[0] == "once"
    assert run_mode({LAST_RUN_KEY: run, DAEMON_STARTED_KEY: later})[0] == "daemon"
    assert run_mode({LAST_RUN_KEY: "not json"}) == ("daemon", None)


def test_a_failed_last_run_once_is_unhealthy_for_cron_users_only() -> None:
    record = {"at": NOW.isoformat(), "ok": False, "failed": ["mailbox: login refused"]}
    once = assess(
        [], NOW, NOW, poll_interval_s=3600, notify_deadline_s=7200, mode="once", last_run=record
    )
    assert once.problems == (
        "the last run --once at 2026-11-29T12:00:00Z failed: mailbox: login refused",
    )
    assert once.last_run_at == NOW
    daemon = assess([], NOW, NOW, poll_interval_s=60, notify_deadline_s=7200, last_run=record)
    assert daemon.healthy


def test_cron_users_are_judged_by_their_interval() -> None:
    # poll_interval is the cron interval for them: hourly runs, last one 2h ago, is fine
    ok = {"at": (NOW - timedelta(hours=2)).isoformat(), "ok": True, "failed": []}
    fine = assess(
        [],
        NOW - timedelta(hours=2),
        NOW,
        poll_interval_s=3600,
        notify_deadline_s=7200,
        mode="once",
        last_run=ok,
    )
    assert fine.healthy
    stale = assess(
        [],
        NOW - timedelta(hours=4),
        NOW,
        poll_interval_s=3600,
        notify_deadline_s=7200,
        mode="once",
        last_run=ok,
    )
    assert stale.problems == ("no successful mailbox poll for 4h00m",)


def test_utc_iso_is_absolute_utc() -> None:
    tokyo = datetime(2026, 11, 29, 21, 0, 5, tzinfo=timezone(timedelta(hours=9)))
    assert utc_iso(tokyo) == "2026-11-29T12:00:05Z"
    assert utc_iso(None) is None


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
