"""Submissions on demand, on schedule, and after a deadline or an expired link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_poller.errors import ApiError, DuplicateSubmission
from inbox_poller.ledger.store import Store
from inbox_poller.loop.submitter import Submitter
from inbox_poller.models import (
    ExportRequest,
    ExportState,
    MailKey,
    MailOutcome,
    MailRecord,
    Send,
)
from inbox_poller.schedules.table import ExportSchedule
from tests.fakes import FakeApi

START = datetime(2026, 11, 29, 3, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def submitter(tmp_path: Path, api: FakeApi, clock: Clock) -> Submitter:
    return Submitter(Store(tmp_path / "state.db"), api, clock=clock)


DAILY = (
    ExportSchedule.parse(
        {"name": "daily", "stat": "42", "cron": "0 3 * * *", "window": "previous-day"}
    ),
)


def test_submit_records_the_raw_answer(submitter: Submitter, api: FakeApi) -> None:
    api.last_response = '{"status":"SUCCESS","data":{"jobid":"5000"}}'
    export = submitter.submit(ExportRequest("42"))
    assert export.state is ExportState.SUBMITTED
    assert export.job_id == "5000"


def test_a_schedule_fires_once_per_window(submitter: Submitter, api: FakeApi, clock: Clock) -> None:
    first = submitter.submit_due(DAILY, clock.now)
    assert [(e.request.startdate, e.request.enddate) for e in first] == [("20261128", "20261129")]
    assert first[0].schedule == "daily"
    for minutes in (1, 30, 600):  # the same day: nothing new is due
        clock.now = START + timedelta(minutes=minutes)
        assert submitter.submit_due(DAILY, clock.now) == []
    assert len(api.submitted) == 1


def test_missed_windows_are_submitted_once_after_downtime(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    submitter.submit_due(DAILY, clock.now)
    clock.now = START + timedelta(days=3)  # down for three days
    caught_up = submitter.submit_due(DAILY, clock.now)
    assert [e.request.startdate for e in caught_up] == ["20261129", "20261130", "20261201"]
    assert submitter.submit_due(DAILY, clock.now) == []  # a restart does not repeat them
    assert len(api.submitted) == 4


def test_a_pending_export_of_the_same_window_blocks_a_second_submit(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    submitter.submit(ExportRequest("42", "20261128", "20261129"))
    assert submitter.submit_due(DAILY, clock.now) == []
    assert len(api.submitted) == 1


def test_a_window_whose_link_just_failed_is_left_to_a_later_mail_or_the_deadline_check(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    # a catch-up fire for a window whose export's link failed a moment ago: a scheduled
    # request now and a later real mail (or reconcile) would archive the window twice
    export = submitter.submit(ExportRequest("42", "20261128", "20261129"))
    store = submitter.store
    key = MailKey("INBOX", 1, 1)
    record = MailRecord(key, "<m@x>", MailOutcome.MATCHED, "ok", clock.now, export.export_id)
    store.record_mail(record, clock.now, download_url="https://a.example/x.json")
    store.mark_downloading(export.export_id, clock.now)
    store.mark_link_expired(export.export_id, "HTTP 404", clock.now)
    assert submitter.submit_due(DAILY, clock.now, notify_deadline_s=7200) == []
    assert len(api.submitted) == 1


def test_overdue_failed_job_is_resubmitted_and_bounded(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    first = submitter.submit(ExportRequest("42"))
    assert first.job_id is not None
    clock.now += timedelta(hours=1)
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=1) == []
    clock.now += timedelta(hours=2)
    api.statuses[first.job_id] = "failed"
    [second] = submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=1)
    old = submitter.store.get_export(first.export_id)
    assert old.state is ExportState.FAILED
    assert "Pinpointe reports the job as 'failed'" in (old.reason or "")
    assert (second.replaces, second.resubmits) == (first.export_id, 1)
    clock.now += timedelta(hours=3)
    # the replacement vanished too, but the chain is at its bound
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=1) == []
    assert submitter.store.get_export(second.export_id).state is ExportState.FAILED
    assert len(api.submitted) == 2


def test_a_job_still_running_is_noted_and_checked_again_later(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    export = submitter.submit(ExportRequest("42"))
    assert export.job_id is not None
    api.statuses[export.job_id] = "waiting"
    clock.now += timedelta(hours=3)
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=2) == []
    noted = submitter.store.get_export(export.export_id)
    assert (noted.state, noted.remote_status) == (ExportState.SUBMITTED, "waiting")
    assert noted.checked_at == clock.now


def test_an_expired_link_leads_to_one_new_request(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    export = submitter.submit(ExportRequest("42", "20261101", "20261102"))
    store = submitter.store
    store.record_mail(
        MailRecord(MailKey("INBOX", 1, 1), "<m@x>", MailOutcome.MATCHED, "", clock.now, 1),
        clock.now,
        download_url="https://a.example/x",
    )
    store.mark_downloading(export.export_id, clock.now)
    store.mark_link_expired(export.export_id, "HTTP 410", clock.now)
    # until the notification deadline a later mail may still bring a working link
    # (issue 9, red-team finding 2): that is preferred to a new request
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=2) == []
    clock.now += timedelta(hours=2)
    [again] = submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=2)
    assert again.request == export.request
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=2) == []


def test_api_outage_during_reconcile_changes_nothing(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    export = submitter.submit(ExportRequest("42"))

    def down(_ids: object) -> dict[str, str]:
        raise ApiError("connection refused", definitive=False)

    api.job_status = down  # type: ignore[method-assign, assignment]
    clock.now += timedelta(hours=3)
    assert submitter.reconcile(clock.now, notify_deadline_s=7200, max_resubmits=2) == []
    assert submitter.store.get_export(export.export_id).state is ExportState.SUBMITTED


SENDS = (
    ExportSchedule.parse(
        {
            "name": "recent-sends-daily",
            "sends": "last-7-days",
            "cron": "0 3 * * *",
            "window": "previous-day",
        }
    ),
)


def _sent(*statids: str) -> list[Send]:
    return [
        Send(statid, str(int(statid) // 10), f"news {statid}", "1764000000") for statid in statids
    ]


def test_a_sends_schedule_submits_one_export_per_send_and_window(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    api.sends = _sent("4711", "4712")
    first = submitter.submit_due(SENDS, clock.now)
    assert api.sends_asked == [7]
    assert sorted(e.request.stat for e in first) == ["4711", "4712"]
    assert {(e.request.startdate, e.request.enddate) for e in first} == {("20261128", "20261129")}
    assert all(e.schedule == "recent-sends-daily" for e in first)
    assert first[0].origin is not None and first[0].origin.startswith("send 47")
    # a second fire the same day, and a restart (a new Submitter on the same ledger)
    clock.now = START + timedelta(minutes=30)
    assert submitter.submit_due(SENDS, clock.now) == []
    again = Submitter(submitter.store, api, clock=clock)
    assert again.submit_due(SENDS, clock.now) == []
    # a new send the next day: yesterday's window for every send of the last 7 days
    api.sends = _sent("4711", "4712", "4713")
    clock.now = START + timedelta(days=1)
    second = submitter.submit_due(SENDS, clock.now)
    assert sorted(e.request.stat for e in second) == ["4711", "4712", "4713"]
    assert {e.request.startdate for e in second} == {"20261129"}
    assert len(api.submitted) == 5


def test_missed_fires_of_a_sends_schedule_are_caught_up_once(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    api.sends = _sent("4711")
    submitter.submit_due(SENDS, clock.now)
    clock.now = START + timedelta(days=3)  # three fires missed
    caught_up = submitter.submit_due(SENDS, clock.now)
    assert sorted(e.request.startdate or "" for e in caught_up) == [
        "20261129",
        "20261130",
        "20261201",
    ]
    assert submitter.submit_due(SENDS, clock.now) == []
    pairs = [(r.stat, r.startdate) for r in api.submitted]
    assert len(pairs) == len(set(pairs)) == 4


def test_a_failed_sends_listing_leaves_the_fire_for_the_next_one(
    submitter: Submitter, api: FakeApi, clock: Clock
) -> None:
    api.error = ApiError("Pinpointe is down", status=503, definitive=False)
    assert submitter.submit_due(SENDS, clock.now) == []
    api.error = None
    api.sends = _sent("4711")
    clock.now = START + timedelta(hours=2)
    later = submitter.submit_due(SENDS, clock.now)
    assert [(e.request.stat, e.request.startdate) for e in later] == [("4711", "20261128")]


def test_two_racing_fires_cannot_insert_the_same_scheduled_export(
    submitter: Submitter, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = submitter.store
    request = ExportRequest("4711", "20261128", "20261129")
    first = store.create_export(request, clock.now, schedule="daily")
    # fault injection: a second fire that counted before the first one's row existed
    # computes the same slot; the ledger's unique index refuses it
    monkeypatch.setattr(
        Store, "_schedule_slot", staticmethod(lambda conn, schedule, request: "the-slot")
    )
    store.create_export(ExportRequest("1"), clock.now, schedule="other")
    with pytest.raises(DuplicateSubmission, match="already submitted"):
        store.create_export(request, clock.now, schedule="daily")
    assert [e.export_id for e in store.exports_for(request)] == [first.export_id]
