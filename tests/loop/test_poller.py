"""The core loop's decisions, with a real ledger and archive and fake network edges."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.archive import Archive
from inbox_poller.errors import (
    ApiError,
    DownloadError,
    DownloadTransient,
    LinkExpired,
    MailboxError,
    PayloadInvalid,
)
from inbox_poller.ledger.keys import LAST_RUN_KEY
from inbox_poller.ledger.store import Store
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.budget import START_TIMEOUT_S, MailBudget
from inbox_poller.loop.poller import Poller
from inbox_poller.loop.reader import ReaderSettings
from inbox_poller.loop.submitter import Submitter
from inbox_poller.matching.sender import SenderPolicy
from inbox_poller.models import (
    CycleReport,
    ExportRequest,
    ExportState,
    MailboxStatus,
    MailKey,
    MailOutcome,
)
from inbox_poller.urlpolicy import parse_host_rule
from tests.costly_mails import COSTLY_MAILS
from tests.fakes import FakeApi, FakeDownloader, FakeMailbox, RecordingMetrics
from tests.loop.budget_targets import costly

TARGETS = "tests.loop.budget_targets"

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
        self.metrics = RecordingMetrics()
        self.poller = self._poller()
        self.submitter = Submitter(self.store, self.api, clock=self.clock, metrics=self.metrics)

    def configure(self, **settings: Any) -> None:
        """Rebuild the poller with these ``ReaderSettings`` (a reloaded configuration); the
        old one's reader is stopped, as the daemon's reload stops the old session's."""
        self.poller.close()
        self.poller = self._poller(**settings)

    def _poller(self, **settings: Any) -> Poller:
        archiver = ExportArchiver(
            self.store,
            self.archive,
            self.downloader,
            max_attempts=2,
            clock=self.clock,
            metrics=self.metrics,
        )
        rules = (parse_host_rule(".mypinpointe.com"),)
        reader = ReaderSettings(rules=rules, keyword=KEYWORD, **settings)
        return Poller(self.store, archiver, reader, clock=self.clock, metrics=self.metrics)

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
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.poller.close()


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


def test_the_ledger_is_synced_before_any_mail_is_acknowledged(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "archived" is a relaxed commit (reliability.md §6.1): the mail may leave the folder
    # only once it is durable
    steps: list[str] = []
    sync, acknowledge_many = world.store.sync, world.mailbox.acknowledge_many

    def synced() -> None:
        steps.append("sync")
        sync()

    def acknowledged(mails: Any) -> list[str]:
        steps.append("acknowledge")
        return acknowledge_many(mails)

    monkeypatch.setattr(world.store, "sync", synced)
    monkeypatch.setattr(world.mailbox, "acknowledge_many", acknowledged)
    world.notify(world.submit())
    report = world.run_once()
    assert report.acknowledged == 1
    assert steps == ["sync", "acknowledge"]
    steps.clear()
    world.run_once()  # nothing to acknowledge: no sync either
    assert steps == []


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


# --- digests (issue 9) -------------------------------------------------------------

EML_DIR = Path(__file__).parents[1] / "data" / "eml"
DIGEST_JOBS = ("482913075", "590174263")
DIGEST_LINKS = tuple(
    f"https://exports.mypinpointe.com/files/{job}/contact-data.json.gz?expires=1767225600&sig={sig}"
    for job, sig in zip(DIGEST_JOBS, ("QUFBQUFB", "QkJCQkJC"), strict=True)
)


def _submit_as(world: World, job_id: str, stat: str) -> None:
    world.api.next_job_id = int(job_id)
    assert world.submit(stat) == job_id


def test_a_digest_archives_each_of_its_exports_once(world: World) -> None:
    for job_id, stat in zip(DIGEST_JOBS, ("4711", "4712"), strict=True):
        _submit_as(world, job_id, stat)
    for number, link in enumerate(DIGEST_LINKS):
        world.downloader.payloads[link] = json.dumps([{"n": number}] * (number + 2)).encode()
    world.mailbox.deliver((EML_DIR / "45_digest_two_exports.eml").read_bytes(), "<0045@x>")
    report = world.run_once()
    assert sorted(report.matched) == sorted(DIGEST_JOBS)
    assert sorted(report.archived) == sorted(DIGEST_JOBS)
    assert report.acknowledged == 1  # one mail, acknowledged once
    assert sorted(world.downloader.calls) == sorted(DIGEST_LINKS)
    lines = {line["job_id"]: line for line in world.manifest()}
    assert set(lines) == set(DIGEST_JOBS)
    assert (lines[DIGEST_JOBS[0]]["records"], lines[DIGEST_JOBS[1]]["records"]) == (2, 3)
    assert (lines[DIGEST_JOBS[0]]["stat"], lines[DIGEST_JOBS[1]]["stat"]) == ("4711", "4712")
    for job_id in DIGEST_JOBS:
        export = world.store.export_by_job_id(job_id)
        assert export is not None and export.state is ExportState.ACKNOWLEDGED
    assert len(world.archived_files()) == 2
    again = world.run_once()
    assert (again.mails_seen, again.archived, again.acknowledged) == (0, [], 0)
    assert len(world.downloader.calls) == 2


def test_a_digest_is_acknowledged_only_once_every_export_is_done(world: World) -> None:
    for job_id, stat in zip(DIGEST_JOBS, ("4711", "4712"), strict=True):
        _submit_as(world, job_id, stat)
    world.downloader.payloads.update(dict.fromkeys(DIGEST_LINKS, PAYLOAD))
    world.downloader.errors[DIGEST_LINKS[1]] = [DownloadTransient("HTTP 503 three times")]
    world.mailbox.deliver((EML_DIR / "45_digest_two_exports.eml").read_bytes(), "<0045@x>")
    report = world.run_once()
    assert report.archived == [DIGEST_JOBS[0]]
    assert world.mailbox.acknowledged == []  # the second export is not archived yet
    report = world.run_once()
    assert report.archived == [DIGEST_JOBS[1]]
    assert len(world.mailbox.acknowledged) == 1
    assert len(world.manifest()) == 2


def test_a_digest_read_again_after_a_uidvalidity_change_is_not_archived_again(
    world: World,
) -> None:
    for job_id, stat in zip(DIGEST_JOBS, ("4711", "4712"), strict=True):
        _submit_as(world, job_id, stat)
    world.downloader.payloads.update(dict.fromkeys(DIGEST_LINKS, PAYLOAD))
    world.mailbox.move_to_processed = False
    world.mailbox.deliver((EML_DIR / "45_digest_two_exports.eml").read_bytes(), "<0045@x>")
    world.run_once()
    world.mailbox.reset_uidvalidity()
    report = world.run_once()
    assert (report.mails_seen, report.archived) == (1, [])
    assert len(world.downloader.calls) == 2
    [uid] = world.mailbox.messages
    copy = MailKey(world.mailbox.folder, world.mailbox.uidvalidity, uid)
    record = world.store.get_mail(copy)
    assert record is not None and record.outcome is MailOutcome.DUPLICATE
    assert len(world.store.mail_exports(copy)) == 2


# --- red-team finding 2 of issue 9: a spoofed mail cannot make a real export fail -----

SPOOFED_LINK = "https://na01.mypinpointe.com/exports/anything.json"


def _spoof(world: World, job_id: str | None, link: str = SPOOFED_LINK, n: int = 1) -> None:
    mid = f"<spoof{n}@evil.example>"
    world.mailbox.deliver(notification(job_id, link, mid), mid)


def _only_export(world: World) -> Any:
    [export] = world.store.list_exports()
    return export


def test_a_spoofed_mail_matched_by_elimination_does_not_shut_out_the_real_one(
    world: World,
) -> None:
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [LinkExpired(404)]
    _spoof(world, None)
    world.run_once()
    assert _only_export(world).state is ExportState.LINK_EXPIRED
    world.notify(job)  # the real notification, later
    report = world.run_once()
    assert report.archived == [job]
    assert world.downloader.calls == [SPOOFED_LINK, world.url(job)]  # each link once
    assert len(world.manifest()) == 1
    export = _only_export(world)
    assert export.state is ExportState.ACKNOWLEDGED
    assert export.failed_links == (SPOOFED_LINK,)


def test_the_real_mail_read_in_the_same_pass_as_the_spoof_is_tried_next(world: World) -> None:
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [LinkExpired(404)]
    _spoof(world, None)
    world.notify(job)  # recorded as a duplicate while the spoofed link is pending
    report = world.run_once()
    assert report.archived == [job]
    assert world.downloader.calls == [SPOOFED_LINK, world.url(job)]
    assert report.acknowledged == 2  # both mails concern the archived export
    assert _only_export(world).state is ExportState.ACKNOWLEDGED


def test_a_real_notification_without_job_id_still_follows_a_spoofed_one(world: World) -> None:
    # Pinpointe's format is unknown: the real mail may name no job ID either
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [LinkExpired(404)]
    _spoof(world, None)
    real = "https://na01.mypinpointe.com/exports/d/Qk7xR2mZ.json?sig=s"
    world.downloader.payloads[real] = PAYLOAD
    world.mailbox.deliver(notification(None, real, "<real@x>"), "<real@x>")
    first = world.run_once()  # the real mail finds no export waiting: kept for later
    assert first.unmatched == 1 and first.archived == []
    assert world.run_once().archived == [job]  # re-matched once the spoofed link failed
    assert world.downloader.calls == [SPOOFED_LINK, real]
    assert world.mailbox.messages == {}


@pytest.mark.parametrize(
    "error", [LinkExpired(404), PayloadInvalid("not JSON at byte 0"), DownloadTransient("reset")]
)
def test_a_spoofed_mail_naming_the_job_id_does_not_shut_out_the_real_one(
    world: World, error: DownloadError
) -> None:
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [error] * 2  # max_attempts = 2
    _spoof(world, job)
    world.run_once()
    world.run_once()
    assert _only_export(world).state in (ExportState.LINK_EXPIRED, ExportState.FAILED)
    _spoof(world, job, n=2)  # the same bad link again: refused, never downloaded again
    report = world.run_once()
    assert len(report.refused) == 1 and "already failed" in report.refused[0]
    world.notify(job)
    assert world.run_once().archived == [job]
    assert world.downloader.calls.count(world.url(job)) == 1
    assert len(world.manifest()) == 1


def test_a_fresh_link_is_preferred_to_a_resubmission(world: World) -> None:
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [LinkExpired(404)]
    _spoof(world, None)
    world.run_once()
    assert world.submitter.reconcile(world.clock(), notify_deadline_s=7200, max_resubmits=2) == []
    world.notify(job)
    assert world.run_once().archived == [job]
    world.clock.now += timedelta(hours=3)
    assert world.submitter.reconcile(world.clock(), notify_deadline_s=7200, max_resubmits=2) == []
    assert len(world.api.submitted) == 1


def test_a_resubmitted_export_is_not_revived_by_a_late_mail(world: World) -> None:
    job = world.submit()
    world.downloader.errors[SPOOFED_LINK] = [LinkExpired(404)]
    _spoof(world, None)
    world.run_once()
    world.clock.now += timedelta(hours=3)
    [again] = world.submitter.reconcile(world.clock(), notify_deadline_s=7200, max_resubmits=2)
    world.notify(job)  # too late: the new request will bring its own mail
    report = world.run_once()
    assert report.archived == [] and "resubmitted" in report.refused[0]
    assert again.job_id is not None
    world.notify(again.job_id)
    assert world.run_once().archived == [again.job_id]
    assert len(world.manifest()) == 1


def test_without_matching_by_elimination_a_job_less_mail_is_left_alone(world: World) -> None:
    world.configure(by_elimination=False)
    world.submit()
    _spoof(world, None)
    report = world.run_once()
    assert report.unmatched == 1 and report.matched == []
    assert world.downloader.calls == []
    assert _only_export(world).state is ExportState.SUBMITTED


SENDER = SenderPolicy(("mx.inbox.example",), ("mypinpointe.example",))


def _authenticated(raw: bytes) -> bytes:
    return (
        b"Authentication-Results: mx.inbox.example; dkim=pass header.d=mypinpointe.example;"
        b" spf=pass smtp.mailfrom=mypinpointe.example;"
        b" dmarc=pass header.from=mypinpointe.example\r\n" + raw
    )


def _lose_the_submit_answer(world: World) -> None:
    world.api.error = ApiError("connection reset after sending", definitive=False)
    with pytest.raises(ApiError):
        world.submit()
    world.api.error = None


def test_without_sender_checks_any_mail_may_reveal_a_lost_job_id(world: World) -> None:
    # documented as weaker (docs/matching.md §6): this is what [sender] is for
    _lose_the_submit_answer(world)
    world.downloader.payloads[SPOOFED_LINK] = PAYLOAD
    _spoof(world, "6666")
    assert world.run_once().archived == ["6666"]


def test_with_sender_checks_only_an_authenticated_mail_reveals_a_lost_job_id(
    world: World,
) -> None:
    world.configure(sender_policy=SENDER)
    _lose_the_submit_answer(world)
    _spoof(world, "6666")
    report = world.run_once()
    assert "sender not authenticated" in report.refused[0]
    assert _only_export(world).state is ExportState.SUBMIT_UNKNOWN
    url = world.url("7777")
    world.downloader.payloads[url] = PAYLOAD
    world.mailbox.deliver(_authenticated(notification("7777", url, "<r@x>")), "<r@x>")
    assert world.run_once().archived == ["7777"]
    assert world.downloader.calls == [url]


def test_a_mail_read_before_sender_checks_were_on_never_reveals_a_job_id(world: World) -> None:
    # two lost answers: the mail cannot be adopted yet and is kept for re-matching
    _lose_the_submit_answer(world)
    _lose_the_submit_answer(world)
    world.downloader.payloads[SPOOFED_LINK] = PAYLOAD
    _spoof(world, "6666")
    assert world.run_once().unmatched == 1
    first = world.store.list_exports()[0]
    world.store.mark_submit_failed(first.export_id, "operator: never sent", world.clock())
    world.configure(sender_policy=SENDER)  # turned on (SIGHUP) before the re-match
    report = world.run_once()
    assert report.matched == [] and world.downloader.calls == []
    assert world.store.list_exports()[1].state is ExportState.SUBMIT_UNKNOWN
    world.configure()  # the same mail, with the check off: adopted, as documented
    assert world.run_once().archived == ["6666"]


# --- a costly mail never stops the mailbox (issue 9, finding 1) ----------------------------


@pytest.mark.parametrize("name", sorted(COSTLY_MAILS))
def test_a_costly_mail_is_recorded_and_the_next_one_read(world: World, name: str) -> None:
    costly = world.mailbox.deliver(COSTLY_MAILS[name]())
    job_id = world.submit()
    world.notify(job_id)
    report = world.run_once()
    # the costly mail is passed (refused, or read and matching nothing) and the
    # notification after it is read, downloaded and acknowledged in the same pass
    assert report.mails_seen == 2
    assert report.archived == [job_id]
    assert report.acknowledged == 1
    assert report.failed == []
    if name in ("folded-from", "encoded-subject", "many-parts"):
        [refused] = report.refused
        assert refused.startswith(f"INBOX/1000/{costly}: too costly to read: ")
    else:
        assert report.unmatched == 1
    # the watermark is past both: the next pass reads nothing again
    assert world.run_once().mails_seen == 0


def test_a_mail_over_the_budget_is_refused_and_the_pass_goes_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.poller.reader.budget = MailBudget(target=f"{TARGETS}:read", time_limit_s=1.0)
    costly_uid = world.mailbox.deliver(costly("sleep"))
    job_id = world.submit()
    world.notify(job_id)
    pings: list[float] = []
    report = CycleReport()
    status = world.mailbox.open()
    world.poller.run_pass(world.mailbox, status, report, progress=lambda: pings.append(1.0))
    world.poller.reader.close()
    stopped = "too costly to read: reading took more than 1 s (stopped)"
    assert report.refused == [f"INBOX/1000/{costly_uid}: {stopped}"]
    assert report.archived == [job_id]
    assert len(pings) >= 4  # fed while the worker was waited for, not only after each mail
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [f"uid INBOX/1000/{costly_uid}: refused (job -): {stopped}"]


def test_run_once_starts_the_mail_reader_while_the_mailbox_connects(world: World) -> None:
    job_id = world.submit()
    world.notify(job_id)
    budget = world.poller.reader.budget
    connect = world.mailbox.open

    def open_once_the_reader_runs() -> MailboxStatus:
        deadline = time.monotonic() + START_TIMEOUT_S
        while budget._worker is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the worker starts on its own thread, before any mail
        assert budget._worker is not None, "the reader was not started before the mailbox"
        return connect()

    world.mailbox.open = open_once_the_reader_runs  # type: ignore[method-assign]
    assert world.run_once().archived == [job_id]
    assert budget.workers_started == 1  # the first mail used it: no second start


def test_a_reader_that_cannot_start_records_nothing_and_stops_the_pass(world: World) -> None:
    world.poller.reader.budget = MailBudget(target="tests.loop.no_such_module:read")
    world.mailbox.deliver(COSTLY_MAILS["html-anchors"]())
    report = world.run_once()
    assert report.mails_seen == 1
    assert report.refused == [] and report.unmatched == 0
    assert report.failed and report.failed[0].startswith("mail reader: the mail reader did not")
    # nothing recorded: once the reader works, the same mail is read
    world.poller.reader.budget = MailBudget()
    assert world.run_once().unmatched == 1


def test_the_loop_reports_archives_and_failures_to_the_metrics(world: World) -> None:
    job = world.submit()
    world.notify(job)
    world.downloader.errors[world.url(job)] = [DownloadTransient("HTTP 503 three times")]
    world.run_once()
    world.run_once()
    [(method, size, download_s, waited_s)] = world.metrics.archived
    assert (method, size, download_s) == ("GetNewsletterContactDataSummaryAsync", len(PAYLOAD), 0)
    assert waited_s is not None and waited_s > 0  # from the submission, on the test's clock
    world.api.error = ApiError("Invalid stat", definitive=True)
    with pytest.raises(ApiError):
        world.submit("43")
    world.mailbox.fail_open = MailboxError("connection refused")
    world.run_once()
    assert world.metrics.kinds() == [
        ("download", "DownloadTransient"),
        ("api", "ApiError"),
        ("mailbox", "MailboxError"),
    ]


def test_run_once_records_its_outcome_for_status(world: World) -> None:
    world.run_once()
    assert json.loads(world.store.daemon_values()[LAST_RUN_KEY])["ok"] is True
    world.mailbox.fail_open = MailboxError("connection refused")
    world.run_once()
    record = json.loads(world.store.daemon_values()[LAST_RUN_KEY])
    assert record["ok"] is False
    assert record["failed"] == ["mailbox: connection refused"]
    assert datetime.fromisoformat(record["at"]) == world.clock.now
