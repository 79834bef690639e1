"""Download attempts: each one counts when it starts, whatever ends it (red-team 3).

A real ledger and archive; the downloader is a fault injector that writes a little and
then runs out of memory (or stands in for a process killed mid-download). Both ways an
export is downloaded are exercised: in line (``Poller.run_once``, what ``run --once``
does) and through the daemon's download pool (``service/downloads.py``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.archive import Archive
from inbox_poller.ledger.store import Store
from inbox_poller.loop import reader
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.poller import Poller
from inbox_poller.loop.reader import ReaderSettings
from inbox_poller.loop.submitter import Submitter
from inbox_poller.models import (
    CycleReport,
    DownloadResult,
    Export,
    ExportRequest,
    ExportState,
    FetchedMail,
)
from inbox_poller.ports import PayloadSink
from inbox_poller.service.downloads import DownloadPool
from inbox_poller.urlpolicy import parse_host_rule
from tests.fakes import FakeApi, FakeDownloader, FakeMailbox

MAX_ATTEMPTS = 2


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class MemoryHungryDownloader:
    """Fault injection: every download writes a little, then raises *error*."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        self.calls += 1
        sink.write(b"[" * 1000)
        raise self.error


class World:
    """One export, submitted and notified, downloaded by a faulty downloader."""

    def __init__(self, tmp_path: Path, error: BaseException, pollers: list[Poller]) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.store = Store(tmp_path / "state.db")
        self.archive = Archive(tmp_path / "archive")
        self.mailbox = FakeMailbox()
        self.downloader = MemoryHungryDownloader(error)
        self.archiver = self.new_archiver()
        settings = ReaderSettings(
            rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
        )
        self.poller = Poller(self.store, self.archiver, settings, clock=self.clock)
        pollers.append(self.poller)
        export = Submitter(self.store, FakeApi(), clock=self.clock).submit(
            ExportRequest("42", "20261001", "20261002")
        )
        assert export.job_id is not None
        self.job = export.job_id
        url = f"https://na01.mypinpointe.com/exports/{self.job}.json?sig=secret"
        self.mailbox.deliver(
            b"From: Pinpointe <noreply@mypinpointe.example>\r\n"
            b"Subject: Your export is ready\r\nMessage-ID: <n1@example.test>\r\n\r\n"
            + f"Job ID: {self.job}\r\nDownload: {url}\r\n".encode(),
            "<n1@example.test>",
        )

    def new_archiver(self) -> ExportArchiver:
        return ExportArchiver(
            self.store, self.archive, self.downloader, max_attempts=MAX_ATTEMPTS, clock=self.clock
        )

    def export(self) -> Export:
        export = self.store.export_by_job_id(self.job)
        assert export is not None
        return export


def test_an_unexpected_error_counts_its_attempt_and_gives_up_at_max_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pollers: list[Poller]
) -> None:
    world = World(tmp_path, MemoryError(), pollers)
    first = world.poller.run_once(world.mailbox)  # run --once
    export = world.export()
    assert (export.state, export.attempts) == (ExportState.NOTIFIED, 1)
    assert "unexpected MemoryError" in (export.reason or "")
    assert first.failed == [f"job {world.job}: unexpected MemoryError during the download"]
    [logged] = [r for r in caplog.records if "MemoryError" in r.getMessage()]
    assert logged.exc_info is not None  # the traceback of a bug is kept, in one record

    world.poller.run_once(world.mailbox)
    export = world.export()
    assert export.state is ExportState.FAILED
    assert f"gave up after {MAX_ATTEMPTS} attempts" in (export.reason or "")
    world.poller.run_once(world.mailbox)
    assert world.downloader.calls == MAX_ATTEMPTS
    assert list(world.archive.root.rglob("*.json")) == []
    assert list(world.archive.root.rglob("*.part")) == []


def test_a_download_that_never_ended_counts_and_is_not_started_past_max_attempts(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    world = World(tmp_path, SystemExit(137), pollers)  # stands in for the OOM killer
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with pytest.raises(SystemExit):
            world.poller.run_once(world.mailbox)
        export = world.export()
        assert (export.state, export.attempts) == (ExportState.DOWNLOADING, attempt)
    # the next start: the attempts are used up, so none is started
    report = world.poller.run_once(world.mailbox)
    assert world.downloader.calls == MAX_ATTEMPTS
    export = world.export()
    assert export.state is ExportState.FAILED
    assert export.reason == (
        f"gave up after {MAX_ATTEMPTS} attempts (download.max_attempts = {MAX_ATTEMPTS}); "
        "the last one ended without an outcome"
    )
    assert report.failed == [f"job {world.job}: {export.reason}"]


def test_the_daemon_pool_counts_unexpected_errors_and_stops_at_max_attempts(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    world = World(tmp_path, MemoryError(), pollers)
    stop = threading.Event()
    finished = threading.Semaphore(0)
    pool = DownloadPool(world.store, world.archiver, workers=2, stop=stop, on_done=finished.release)
    try:
        status = world.mailbox.open()
        world.poller.run_pass(world.mailbox, status, CycleReport(), downloads=pool.dispatch)
        assert finished.acquire(timeout=30)
        export = world.export()
        assert (export.state, export.attempts) == (ExportState.NOTIFIED, 1)
        pool.dispatch()
        assert finished.acquire(timeout=30)
        export = world.export()
        assert export.state is ExportState.FAILED
        assert f"gave up after {MAX_ATTEMPTS} attempts" in (export.reason or "")
        pool.dispatch()  # nothing is ready any more
        assert not finished.acquire(timeout=0.5)
        assert world.downloader.calls == MAX_ATTEMPTS
    finally:
        stop.set()
        pool.shutdown(time.monotonic() + 10)


def test_two_threads_claiming_at_once_never_try_an_export_twice_in_one_pass(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    """Thread B copies the skip list while thread A's claim is under way, and its own
    claim reaches the ledger once A's attempt has failed and put the export back: B must
    not take it again (it did, one time in ten, in the pool test above)."""
    world = World(tmp_path, MemoryError(), pollers)
    status = world.mailbox.open()
    world.poller.run_pass(world.mailbox, status, CycleReport(), downloads=lambda report: None)
    archiver, claim_download = world.archiver, world.store.claim_download
    b_claiming, a_attempt_over = threading.Event(), threading.Event()

    def claim_download_in_step(*args: Any, **kwargs: Any) -> Export | None:
        if threading.current_thread().name == "A":
            b_claiming.wait(5)
            time.sleep(0.2)  # B copies its skip list now, unless claims take turns
        else:
            a_attempt_over.wait(5)
        return claim_download(*args, **kwargs)

    world.store.claim_download = claim_download_in_step  # type: ignore[method-assign]
    claimed: dict[str, Export | None] = {}

    def a() -> None:
        claimed["A"] = export = archiver.claim()
        assert export is not None
        archiver.download_export(export, CycleReport())
        archiver.tried(export)
        a_attempt_over.set()

    def b() -> None:
        b_claiming.set()
        claimed["B"] = archiver.claim()

    threads = [threading.Thread(target=a, name="A"), threading.Thread(target=b, name="B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert claimed["A"] is not None
    assert claimed["B"] is None
    assert (world.export().state, world.export().attempts) == (ExportState.NOTIFIED, 1)
    assert world.downloader.calls == 1


class MeetingDownloader(FakeDownloader):
    """Each download waits until *parties* downloads are under way at once."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)
        self.threads: set[str] = set()

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        self.threads.add(threading.current_thread().name)
        self.barrier.wait()  # BrokenBarrierError (a failed download) when run one by one
        self.payloads[url] = b"[1]"
        return super().download(url, sink, expected=expected)


def test_run_once_downloads_a_backlog_several_at_a_time_and_reports_it_in_order(
    tmp_path: Path, pollers: list[Poller]
) -> None:
    clock = Clock()
    store = Store(tmp_path / "state.db")
    downloader = MeetingDownloader(parties=2)
    archiver = ExportArchiver(
        store, Archive(tmp_path / "archive"), downloader, max_attempts=2, clock=clock, workers=2
    )
    settings = ReaderSettings(
        rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
    )
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    submitter = Submitter(store, FakeApi(), clock=clock)
    mailbox = FakeMailbox()
    jobs = []
    for stat in ("41", "42", "43", "44"):
        job = submitter.submit(ExportRequest(stat, "20261001", "20261002")).job_id
        assert job is not None
        jobs.append(job)
        url = f"https://na01.mypinpointe.com/exports/{job}.json?sig=secret"
        mailbox.deliver(
            b"From: Pinpointe <noreply@mypinpointe.example>\r\nSubject: Export ready\r\n"
            + f"Message-ID: <n{job}@example.test>\r\n\r\nJob ID: {job}\r\n{url}\r\n".encode(),
            f"<n{job}@example.test>",
        )

    report = poller.run_once(mailbox)

    assert report.failed == []
    assert report.archived == jobs  # in the exports' order, whichever thread finished first
    assert len(downloader.threads) == 2
    assert {e.state for e in store.list_exports()} == {ExportState.ACKNOWLEDGED}
    assert mailbox.batches == [4]  # the four mails acknowledged as one set
    manifest = (tmp_path / "archive" / "manifest.jsonl").read_text(encoding="utf-8")
    assert sorted(json.loads(line)["job_id"] for line in manifest.splitlines()) == sorted(jobs)


class SlowMailbox(FakeMailbox):
    """Before yielding each mail after the first, waits (5 s at most) for a download to
    start; notes whether one had."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        self.started = started
        self.overlapped: list[bool] = []

    def fetch_new(self, after_uid: int, since: date | None = None) -> Iterator[FetchedMail]:
        for number, mail in enumerate(super().fetch_new(after_uid, since)):
            if number:
                self.overlapped.append(self.started.wait(5))
            yield mail


class SignallingDownloader(FakeDownloader):
    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        self.started = started

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        self.started.set()
        self.payloads[url] = b"[1]"
        return super().download(url, sink, expected=expected)


def test_run_once_starts_downloading_while_it_still_reads_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pollers: list[Poller]
) -> None:
    monkeypatch.setattr(reader, "FIRST_RECORD_BATCH", 1)  # each mail its own batch
    monkeypatch.setattr(reader, "RECORD_BATCH", 1)
    clock = Clock()
    started = threading.Event()
    store = Store(tmp_path / "state.db")
    archiver = ExportArchiver(
        store,
        Archive(tmp_path / "archive"),
        SignallingDownloader(started),
        max_attempts=2,
        clock=clock,
        workers=2,
    )
    settings = ReaderSettings(
        rules=(parse_host_rule(".mypinpointe.com"),), keyword="$ExportArchived"
    )
    poller = Poller(store, archiver, settings, clock=clock)
    pollers.append(poller)
    submitter = Submitter(store, FakeApi(), clock=clock)
    mailbox = SlowMailbox(started)
    jobs = []
    for stat in ("41", "42", "43"):
        job = submitter.submit(ExportRequest(stat, "20261001", "20261002")).job_id
        assert job is not None
        jobs.append(job)
        url = f"https://na01.mypinpointe.com/exports/{job}.json?sig=secret"
        mailbox.deliver(
            b"From: Pinpointe <noreply@mypinpointe.example>\r\nSubject: Export ready\r\n"
            + f"Message-ID: <n{job}@example.test>\r\n\r\nJob ID: {job}\r\n{url}\r\n".encode(),
            f"<n{job}@example.test>",
        )

    report = poller.run_once(mailbox)

    assert mailbox.overlapped == [True, True]  # the first download began before mail 2
    assert report.archived == jobs and report.failed == []
    assert {e.state for e in store.list_exports()} == {ExportState.ACKNOWLEDGED}


def test_the_pause_after_an_archive_outage_doubles_up_to_its_bound() -> None:
    from inbox_poller.loop.archiver import OUTAGE_MAX_PAUSE_S, outage_pause_s

    assert [outage_pause_s(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert outage_pause_s(7) == outage_pause_s(50) == OUTAGE_MAX_PAUSE_S
