"""De-duplication against the ledger: never twice, failures bounded (docs/schedules.md §4)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from inbox_poller.models import ExportState
from inbox_poller.schedules.due import DueSubmission
from inbox_poller.schedules.duplicates import should_submit
from tests.schedules.samples import make_export, utc

DUE = DueSubmission("daily", utc("2026-11-29T03:00"), "4711", "20261128", "20261129")


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
    ledger = [make_export(7, DUE.request, state, reason="boom")]
    decision, why = should_submit(DUE, ledger)
    assert decision is submit
    assert reason in why


def test_only_the_same_request_counts() -> None:
    others = [
        make_export(1, dataclasses.replace(DUE.request, stat="4712"), ExportState.ARCHIVED),
        make_export(
            2, dataclasses.replace(DUE.request, startdate="20261127"), ExportState.SUBMITTED
        ),
        make_export(3, dataclasses.replace(DUE.request, enddate=None), ExportState.SUBMITTED),
        make_export(4, dataclasses.replace(DUE.request, method="Other"), ExportState.ARCHIVED),
    ]
    assert should_submit(DUE, others) == (True, "no export of this stat and window yet")
    assert should_submit(DUE, []) == (True, "no export of this stat and window yet")


def test_a_pending_export_wins_over_failed_ones_and_failures_are_bounded() -> None:
    failed = [make_export(n, DUE.request, ExportState.FAILED, reason=f"r{n}") for n in (1, 2)]
    assert should_submit(DUE, failed) == (True, "resubmitting: export 2 ended in failed (r2)")
    assert should_submit(DUE, [*failed, make_export(3, DUE.request)])[0] is False
    third = make_export(3, DUE.request, ExportState.LINK_EXPIRED)
    decision, why = should_submit(DUE, [*failed, third])
    assert decision is False
    assert "3 exports of this stat and window failed (the last is export 3)" in why
    assert should_submit(DUE, [*failed, third], max_failed=4)[0] is True


def test_an_open_window_wants_fresh_data_at_each_fire() -> None:
    due = dataclasses.replace(DUE, startdate=None, enddate=None)
    before, after = due.fire_time - timedelta(hours=6), due.fire_time + timedelta(seconds=1)
    old = make_export(1, due.request, ExportState.ACKNOWLEDGED, created=before)
    assert should_submit(due, [old])[0] is True
    new = make_export(2, due.request, ExportState.ARCHIVED, created=after)
    assert should_submit(due, [old, new]) == (False, "already exported as export 2 (archived)")
    in_flight = make_export(3, due.request, ExportState.DOWNLOADING, created=before)
    assert should_submit(due, [old, in_flight])[0] is False
    old_failures = [
        make_export(n, due.request, ExportState.FAILED, created=before) for n in (4, 5, 6)
    ]
    assert should_submit(due, old_failures) == (True, "no export of this stat and window yet")


GRACE = timedelta(hours=2)


@pytest.mark.parametrize(
    ("failed_ago", "submit"),
    [(timedelta(minutes=30), False), (GRACE + timedelta(minutes=1), True)],
)
def test_a_window_whose_link_failed_waits_for_a_later_mail_within_the_grace(
    failed_ago: timedelta, submit: bool
) -> None:
    # a spoofed or dead link: a later mail may still bring the export a working one, and
    # the deadline check resubmits it after the grace; a scheduled request meanwhile could
    # archive the window twice (found while fixing red-team finding 2 of issue 9)
    expired = dataclasses.replace(
        make_export(7, DUE.request, ExportState.LINK_EXPIRED, reason="HTTP 404"),
        updated_at=DUE.fire_time - failed_ago,
    )
    decision, why = should_submit(DUE, [expired], link_grace=GRACE)
    assert decision is submit, why
    if not submit:
        assert "export 7 for the same stat and window lost its link" in why


def test_a_window_whose_failed_export_was_resubmitted_is_judged_by_the_successor() -> None:
    expired = dataclasses.replace(
        make_export(7, DUE.request, ExportState.LINK_EXPIRED), updated_at=DUE.fire_time
    )
    successor = dataclasses.replace(make_export(8, DUE.request, ExportState.SUBMITTED), replaces=7)
    decision, why = should_submit(DUE, [successor, expired], link_grace=GRACE)
    assert decision is False and "export 8" in why
    archived = dataclasses.replace(successor, state=ExportState.ACKNOWLEDGED)
    assert should_submit(DUE, [archived, expired], link_grace=GRACE)[0] is False
