"""The core loop's decisions, with a real ledger and archive and fake network edges."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from inbox_poller.archive import Archive
from inbox_poller.errors import (
    ApiError,
    DownloadTransient,
    LinkExpired,
    MailboxError,
    PayloadInvalid,
)
from inbox_poller.ledger.store import Store
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.poller import Poller
from inbox_poller.loop.reader import ReaderSettings
from inbox_poller.loop.submitter import Submitter
from inbox_poller.models import CycleReport, ExportRequest, ExportState, MailOutcome
from inbox_poller.urlpolicy import parse_host_rule
from tests.fakes import FakeApi, FakeDownloader, FakeMailbox

KEYWORD = "$ExportArchived"
PAYLOAD = json.dumps([{"email": "a@example.com", "event": "open"}] * 3).encode()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def notification(job_id: str | None, url: str, message_id: str = "<n1@example.test>") -> bytes:
    mail = EmailMessage()
    mail["From"] = "Pinpointe <noreply@mypinpointe.example>"
    mail["To"] = "box@example.com"
    mail["Subject"] = "Your export is ready"
    mail["Message-ID"] = message_id
    job_line = f"Job ID: {job_id}\n" if job_id else ""
    mail.set_content(f"Hello,\n{job_line}Download: {url}\n\nUnsubscribe: https://example.com/u\n")
    return mail.as_bytes()


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "state.db")
        self.archive = Archive(tmp_path / "archive")
        self.mailbox = FakeMailbox()
        self.api = FakeApi()
        self.downloader = FakeDownloader()
        self.clock = Clock()
        archiver = ExportArchiver(
            self.store, self.archive, self.downloader, max_attempts=2, clock=self.clock
        )
        settings = ReaderSettings(rules=(parse_host_rule(".mypinpointe.com"),), keyword=KEYWORD)
        self.poller = Poller(self.store, archiver, settings, clock=self.clock)
        self.submitter = Submitter(self.store, self.api, clock=self.clock)

    def run_once(self) -> CycleReport:
        return self.poller.run_once(self.mailbox)

    def submit(self, stat: str = "42") -> str:
        export = self.submitter.submit(ExportRequest(stat, "20261001", "20261002"))
        assert export.job_id is not None
        return export.job_id

    def url(self, job_id: str) -> str:
        return f"https://na01.mypinpointe.com/exports/{job_id}.json?sig=secret"

    def notify(self, job_id: str, message_id: str | None = None) -> int:
        url = self.url(job_id)
        self.downloader.payloads.setdefault(url, PAYLOAD)
        mid = message_id or f"<{job_id}@example.test>"
        return self.mailbox.deliver(notification(job_id, url, mid), mid)

    def manifest(self) -> list[dict[str, object]]:
        path = self.archive.root / "manifest.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def archived_files(self) -> list[Path]:
        return sorted(p for p in self.archive.root.rglob("*.json") if p.is_file())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_full_loop_archives_once_and_acknowledges_last(world: World) -> None:
    job = world.submit()
    world.notify(job)
    report = world.run_once()
    assert report.archived == [job]
    assert report.acknowledged == 1
    export = world.store.export_by_job_id(job)
    assert export is not None
    assert export.state is ExportState.ACKNOWLEDGED
    [line] = world.manifest()
    assert line["job_id"] == job
    assert line["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert line["records"] == 3
    assert line["stat"] == "42"
    assert line["startdate"] == "20261001"
    [path] = world.archived_files()
    assert path.read_bytes() == PAYLOAD
    assert path.stat().st_mode & 0o777 == 0o600
    assert str(path.relative_to(world.archive.root)) == line["path"]
    assert world.mailbox.processed and not world.mailbox.messages

    second = world.run_once()
    assert (second.mails_seen, second.archived, second.acknowledged) == (0, [], 0)
    assert len(world.downloader.calls) == 1
    assert len(world.manifest()) == 1


def test_duplicate_notification_is_acknowledged_without_download(world: World) -> None:
    job = world.submit()
    world.notify(job, "<first@x>")
    world.run_once()
    world.notify(job, "<second@x>")
    report = world.run_once()
    assert report.archived == []
    assert report.acknowledged == 1
    assert len(world.downloader.calls) == 1


def test_uidvalidity_change_rescans_without_rearchiving(world: World) -> None:
    job = world.submit()
    world.mailbox.move_to_processed = False
    world.notify(job)
    world.run_once()
    world.mailbox.reset_uidvalidity()
    report = world.run_once()
    assert report.mails_seen == 1
    assert report.archived == []
    assert len(world.downloader.calls) == 1
    assert len(world.archived_files()) == 1


def test_mail_is_not_acknowledged_before_the_archive(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.downloader.errors[world.url(job)] = [DownloadTransient("HTTP 503 three times")]
    report = world.run_once()
    assert report.failed and not report.archived
    assert world.mailbox.acknowledged == []
    export = world.store.export_by_job_id(job)
    assert export is not None and export.state is ExportState.NOTIFIED
    report = world.run_once()
    assert report.archived == [job]
    assert len(world.mailbox.acknowledged) == 1


def test_transient_failures_give_up_after_max_attempts(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.downloader.errors[world.url(job)] = [DownloadTransient("reset")] * 5
    world.run_once()
    world.run_once()
    export = world.store.export_by_job_id(job)
    assert export is not None
    assert export.state is ExportState.FAILED
    assert "gave up after 2 attempts" in (export.reason or "")
    assert world.archived_files() == []
    assert world.mailbox.acknowledged == []


def test_expired_link_is_a_distinct_state(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.downloader.errors[world.url(job)] = [LinkExpired(410)]
    world.run_once()
    export = world.store.export_by_job_id(job)
    assert export is not None and export.state is ExportState.LINK_EXPIRED
    assert "410" in (export.reason or "")


def test_invalid_payload_leaves_nothing_in_the_archive(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.downloader.errors[world.url(job)] = [PayloadInvalid("truncated JSON at byte 10")]
    report = world.run_once()
    assert report.failed
    assert world.archived_files() == []
    assert list(world.archive.root.rglob("*.part")) == []
    export = world.store.export_by_job_id(job)
    assert export is not None and export.state is ExportState.FAILED


def test_unknown_job_id_is_left_in_place(world: World) -> None:
    world.submit()
    world.mailbox.deliver(notification("999999", "https://na01.mypinpointe.com/x.json"), "<u@x>")
    report = world.run_once()
    assert report.unmatched == 1
    assert world.mailbox.acknowledged == []
    assert world.downloader.calls == []
    assert world.mailbox.messages  # still there
    assert world.run_once().mails_seen == 0  # logged once, not re-read


def test_hostile_link_is_refused_and_the_export_keeps_waiting(world: World) -> None:
    job = world.submit()
    world.mailbox.deliver(notification(job, "https://evil.example/x.json"), "<h@x>")
    world.mailbox.deliver(notification(job, "http://na01.mypinpointe.com/x.json"), "<h2@x>")
    report = world.run_once()
    assert len(report.refused) == 2
    export = world.store.export_by_job_id(job)
    assert export is not None and export.state is ExportState.SUBMITTED
    world.notify(job)
    assert world.run_once().archived == [job]


def test_oversized_mail_is_refused_unread(world: World) -> None:
    world.mailbox.max_message_bytes = 100
    world.submit()
    uid = world.mailbox.deliver(b"Subject: x\r\n\r\n" + b"y" * 500)
    report = world.run_once()
    assert report.refused and "larger than" in report.refused[0]
    assert uid not in world.mailbox.bodies_fetched


def test_submit_failure_states(world: World) -> None:
    world.api.error = ApiError("Unable to verify user credentials", status=401)
    with pytest.raises(ApiError):
        world.submit()
    world.api.error = ApiError("read timed out", definitive=False)
    with pytest.raises(ApiError):
        world.submit()
    states = [e.state for e in world.store.list_exports()]
    assert states == [ExportState.SUBMIT_FAILED, ExportState.SUBMIT_UNKNOWN]


def test_a_lost_submit_answer_is_recovered_from_the_notification(world: World) -> None:
    world.api.error = ApiError("connection reset after sending", definitive=False)
    with pytest.raises(ApiError):
        world.submit()
    world.notify("7777")
    report = world.run_once()
    assert report.archived == ["7777"]
    [export] = world.store.list_exports()
    assert export.job_id == "7777"
    assert export.state is ExportState.ACKNOWLEDGED


def test_mail_without_job_id_matches_only_when_unambiguous(world: World) -> None:
    first = world.submit()
    url = world.url("no-id")
    world.downloader.payloads[url] = PAYLOAD
    world.mailbox.deliver(notification(None, url, "<a@x>"), "<a@x>")
    report = world.run_once()
    assert report.archived == [first]

    world.submit()
    world.submit()
    world.mailbox.deliver(notification(None, url, "<b@x>"), "<b@x>")
    report = world.run_once()
    assert report.unmatched == 1
    assert report.archived == []


def test_unmatched_mail_is_rematched_when_its_export_becomes_known(world: World) -> None:
    # the export exists (its POST is in flight) but its job ID is not known yet; the
    # notification names a job ID, yet two exports are in flight, so it cannot be adopted
    first = world.store.create_export(ExportRequest("1"), world.clock())
    world.store.create_export(ExportRequest("2"), world.clock())
    world.notify("8888")
    report = world.run_once()
    assert report.unmatched == 1
    world.store.mark_submitted(first.export_id, "8888", "late answer", world.clock())
    report = world.run_once()
    assert report.archived == ["8888"]
    record = world.store.get_mail(world.mailbox.acknowledged[0])
    assert record is not None and record.outcome is MailOutcome.MATCHED


def test_mailbox_outage_still_downloads_and_reports(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.mailbox.fail_open = MailboxError("connection refused")
    report = world.run_once()
    assert report.failed == ["mailbox: connection refused"]
    world.mailbox.fail_open = None
    assert world.run_once().archived == [job]


def test_verified_export_is_finished_without_downloading_again(world: World) -> None:
    job = world.submit()
    world.notify(job)
    # stop right after verification, as a crash would
    real_publish = world.poller.archiver._publish
    world.poller.archiver._publish = lambda *a, **k: None  # type: ignore[method-assign]
    world.run_once()
    export = world.store.export_by_job_id(job)
    assert export is not None and export.state is ExportState.VERIFIED
    world.poller.archiver._publish = real_publish  # type: ignore[method-assign]
    report = world.run_once()
    assert report.archived == [job]
    assert len(world.downloader.calls) == 1
    assert len(world.manifest()) == 1
