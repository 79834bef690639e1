"""What the mail reader records: a refused link with the host a client would reach, a
first pass's mail from the server's SEARCH, a backlog in growing batches.

A refused link is recorded in the ledger's reason and logged with the host a client
(browsers, urllib3) would have connected to, and what ``urllib.parse`` sees when that
differs; user info is shown as present, the query never (docs/reliability.md §4.1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.archive import Archive
from inbox_poller.ledger.store import Store
from inbox_poller.loop import reader
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.poller import Poller
from inbox_poller.loop.reader import MailReader, ReaderSettings
from inbox_poller.loop.submitter import Submitter
from inbox_poller.models import (
    CycleReport,
    Export,
    ExportRequest,
    MailboxStatus,
    MailKey,
    MailOutcome,
)
from inbox_poller.urlpolicy import parse_host_rule
from tests.fakes import FakeApi, FakeDownloader, FakeMailbox


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def html_notification(job_id: str, url: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Pinpointe <noreply@mypinpointe.example>"
    mail["Subject"] = "Your export is ready"
    mail["Message-ID"] = "<refused-link@example.test>"
    mail.set_content(f"Job ID: {job_id}\n")
    mail.add_alternative(f'<p>Job ID: {job_id}</p><p><a href="{url}">Download</a></p>', "html")
    return mail.as_bytes()


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        (
            "https://na01.mypinpointe.com\\@evil.example/x.json?sig=secret",
            "https://na01.mypinpointe.com\\@evil.example/x.json?…: the URL contains spaces, "
            "control characters or backslashes (a client would connect to "
            "na01.mypinpointe.com; urllib.parse sees evil.example)",
        ),
        (
            "https://na01.mypinpointe.com@evil.example/x.json?sig=secret",
            "https://<userinfo>@evil.example/x.json?…: the URL carries user info "
            "(a client would connect to evil.example)",
        ),
    ],
)
def test_a_refused_link_is_recorded_with_the_host_a_client_would_reach(
    tmp_path: Path,
    url: str,
    recorded: str,
    caplog: pytest.LogCaptureFixture,
    pollers: list[Poller],
) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.db")
    archiver = ExportArchiver(
        store, Archive(tmp_path / "archive"), FakeDownloader(), max_attempts=2, clock=clock
    )
    settings = ReaderSettings(
        rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
    )
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    export = Submitter(store, FakeApi(), clock=clock).submit(ExportRequest("42"))
    assert export.job_id is not None
    mailbox = FakeMailbox()
    uid = mailbox.deliver(html_notification(export.job_id, url))

    report = poller.run_once(mailbox)

    record = store.get_mail(MailKey("INBOX", mailbox.uidvalidity, uid))
    assert record is not None and record.outcome is MailOutcome.REFUSED
    assert recorded in (record.reason or "")
    assert report.refused == [f"INBOX/{mailbox.uidvalidity}/{uid}: {record.reason}"]
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    [logged] = [r.getMessage() for r in refusals if "refused" in r.getMessage()]
    assert recorded in logged
    assert "secret" not in logged


def test_a_first_pass_skips_on_the_server_mail_older_than_the_oldest_waiting_export(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.db")
    downloader = FakeDownloader()
    url = "https://na01.mypinpointe.com/exports/x.json?sig=1"
    downloader.payloads[url] = b"[1, 2]"
    archiver = ExportArchiver(
        store, Archive(tmp_path / "archive"), downloader, max_attempts=2, clock=clock
    )
    settings = ReaderSettings(
        rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
    )
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    export = Submitter(store, FakeApi(), clock=clock).submit(ExportRequest("42"))
    assert export.job_id is not None
    mailbox = FakeMailbox()
    old = [
        mailbox.deliver(f"Subject: old {n}\r\n\r\nhello\r\n".encode(), internal_date=when)
        for n, when in enumerate(
            [export.created_at - timedelta(days=30), export.created_at - timedelta(days=2)]
        )
    ]
    # within the margin (a server clock 12 hours behind ours): still read
    skewed = mailbox.deliver(
        b"Subject: skewed\r\n\r\nhello\r\n", internal_date=export.created_at - timedelta(hours=12)
    )
    notification = mailbox.deliver(
        html_notification(export.job_id, url), internal_date=export.created_at
    )

    report = poller.run_once(mailbox)

    assert mailbox.since == [(export.created_at - timedelta(days=1)).date()]
    assert mailbox.bodies_fetched == [skewed, notification]
    assert report.archived == [export.job_id] and report.acknowledged == 1
    for uid in old:
        assert store.get_mail(MailKey("INBOX", mailbox.uidvalidity, uid)) is None
    assert store.watermark("INBOX", mailbox.uidvalidity) == notification

    # with a watermark, every new mail is read whatever its date
    late = mailbox.deliver(
        b"Subject: late\r\n\r\nhello\r\n", internal_date=export.created_at - timedelta(days=90)
    )
    poller.run_once(mailbox)
    assert mailbox.since[-1] is None
    assert mailbox.bodies_fetched[-1] == late


def test_a_first_pass_with_no_export_waiting_reads_only_recent_mail(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.db")
    archiver = ExportArchiver(
        store, Archive(tmp_path / "archive"), FakeDownloader(), max_attempts=2, clock=clock
    )
    settings = ReaderSettings(rules=(), keyword="$ExportArchived")
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    mailbox = FakeMailbox()
    mailbox.deliver(b"Subject: old\r\n\r\nhi\r\n", internal_date=clock.now - timedelta(days=3))
    recent = mailbox.deliver(b"Subject: new\r\n\r\nhi\r\n", internal_date=clock.now)

    poller.run_once(mailbox)

    assert mailbox.bodies_fetched == [recent]
    assert mailbox.since[0] is not None and mailbox.since[0] < clock.now.date()


def test_the_reader_sees_exports_another_process_submitted_between_passes(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.db")
    downloader = FakeDownloader()
    archiver = ExportArchiver(
        store, Archive(tmp_path / "archive"), downloader, max_attempts=2, clock=clock
    )
    settings = ReaderSettings(
        rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
    )
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    api = FakeApi()
    mailbox = FakeMailbox()
    jobs = []
    for stat in ("41", "42"):
        # `inbox-poller submit` beside the daemon: its own connection to the ledger
        with Store(tmp_path / "state.db") as other:
            export = Submitter(other, api, clock=clock).submit(ExportRequest(stat))
        assert export.job_id is not None
        jobs.append(export.job_id)
        url = f"https://na01.mypinpointe.com/exports/{export.job_id}.json?sig=1"
        downloader.payloads[url] = b"[1]"
        mail = html_notification(export.job_id, url).replace(
            b"refused-link@", f"n{export.job_id}@".encode()
        )
        mailbox.deliver(mail, internal_date=export.created_at)
        report = poller.run_once(mailbox)
        assert report.archived == [export.job_id], report.failed
    assert [e.state.value for e in store.list_exports()] == ["acknowledged"] * 2


UNRELATED_MAIL = b"From: someone@example.test\r\nSubject: hello\r\n\r\nnot a notification\r\n"


def _read_pass(
    store: Store,
    mailbox: FakeMailbox,
    status: MailboxStatus,
    on_recorded: Callable[[], None] = lambda: None,
) -> None:
    """One pass of a mail reader of its own over *mailbox*, its worker stopped after it."""
    settings = ReaderSettings(rules=(parse_host_rule(".mypinpointe.com"),), keyword="$K")
    mail_reader = MailReader(store, settings, clock=Clock())
    try:
        mail_reader.read(mailbox, status, CycleReport(), on_recorded=on_recorded)
    finally:
        mail_reader.close()


def test_a_backlog_is_recorded_in_batches_that_start_small_and_double(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch is small so that a backlog's downloads start after a few mails;
    each next batch doubles, up to ``RECORD_BATCH``; what is left is recorded at the end."""
    monkeypatch.setattr(reader, "FIRST_RECORD_BATCH", 4)
    monkeypatch.setattr(reader, "RECORD_BATCH", 20)
    monkeypatch.setattr(reader, "RECORD_BATCH_S", 3600.0)  # only the counts close a batch
    mailbox = FakeMailbox()
    for _ in range(60):
        mailbox.deliver(UNRELATED_MAIL)
    with Store(tmp_path / "state.db") as store:
        status = mailbox.open()
        recorded: list[int] = []
        _read_pass(
            store,
            mailbox,
            status,
            lambda: recorded.append(store.watermark(status.folder, status.uidvalidity)),
        )
    assert recorded == [4, 12, 28, 48, 60]  # batches of 4, 8, 16, 20 (the cap), the 12 left


def test_a_first_pass_reads_the_exports_table_once(tmp_path: Path) -> None:
    """The first pass's SEARCH SINCE and the matching's index share one read of every
    export (a backlog's first mail waited for two). No export waits for a link, so that
    re-matching the unmatched mail reads nothing more."""
    mailbox = FakeMailbox()
    mailbox.deliver(UNRELATED_MAIL)
    with Store(tmp_path / "state.db") as store:
        full_reads: list[int] = []
        list_exports = store.list_exports

        def counting(states: Any = None) -> list[Export]:
            if states is None:
                full_reads.append(1)
            return list_exports(states)

        store.list_exports = counting  # type: ignore[method-assign]
        _read_pass(store, mailbox, mailbox.open())
        assert mailbox.since != [None]  # a first pass: SEARCH SINCE the oldest export
        assert len(full_reads) == 1
