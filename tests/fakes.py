"""Fakes implementing the poller's Protocols, for unit tests and fault injection only.

Integration tests use the real edges (Dovecot, the simulator over HTTPS); these
exist so the core's decisions can be tested fast and so faults a real server
will not produce on demand can be injected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from inbox_poller.errors import ApiError, DownloadError, MailboxError
from inbox_poller.models import (
    DownloadResult,
    ExportRequest,
    FetchedMail,
    MailboxStatus,
    MailKey,
    Send,
)
from inbox_poller.ports import HealthSample, PayloadSink


@dataclass
class FakeMessage:
    raw: bytes
    flags: set[str] = field(default_factory=set)
    message_id: str | None = None
    internal_date: datetime | None = None
    """When the server received it; None: the fake ignores ``since`` for it."""


class FakeMailbox:
    """An in-memory folder with UIDs, UIDVALIDITY, keywords and a processed folder."""

    def __init__(self, folder: str = "INBOX", *, max_message_bytes: int = 1024**2) -> None:
        self.folder = folder
        self.uidvalidity = 1000
        self.messages: dict[int, FakeMessage] = {}
        self.processed: list[FakeMessage] = []
        self.next_uid = 1
        self.max_message_bytes = max_message_bytes
        self.fail_open: MailboxError | None = None
        self.acknowledged: list[MailKey] = []
        self.bodies_fetched: list[int] = []
        self.move_to_processed = True
        self.seen_next_uid = 1
        self.batches: list[int] = []
        """The size of each ``acknowledge_many`` call."""
        self.since: list[date | None] = []
        """The *since* of each ``fetch_new`` call."""

    def deliver(
        self, raw: bytes, message_id: str | None = None, *, internal_date: datetime | None = None
    ) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = FakeMessage(raw, message_id=message_id, internal_date=internal_date)
        return uid

    def reset_uidvalidity(self) -> None:
        """Re-create the folder: same messages, new UIDs, a larger UIDVALIDITY."""
        old = [self.messages[uid] for uid in sorted(self.messages)]
        self.uidvalidity += 1
        self.messages = {}
        self.next_uid = 1
        for message in old:
            uid = self.deliver(message.raw, message.message_id, internal_date=message.internal_date)
            self.messages[uid].flags = set(message.flags)

    def open(self) -> MailboxStatus:
        if self.fail_open is not None:
            raise self.fail_open
        self.seen_next_uid = self.next_uid
        return MailboxStatus(self.folder, self.uidvalidity, self.next_uid, True, True, True, True)

    def fetch_new(self, after_uid: int, since: date | None = None) -> Iterator[FetchedMail]:
        self.since.append(since)
        for uid in sorted(u for u in self.messages if u > after_uid):
            message = self.messages[uid]
            dated = message.internal_date
            if since is not None and dated is not None and dated.date() < since:
                continue
            key = MailKey(self.folder, self.uidvalidity, uid)
            size = len(message.raw)
            if size > self.max_message_bytes:
                yield FetchedMail(key, size, None, tuple(message.flags))
                continue
            self.bodies_fetched.append(uid)
            yield FetchedMail(key, size, message.raw, tuple(message.flags))

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        self.acknowledged.append(key)
        uid = key.uid
        if key.uidvalidity != self.uidvalidity:
            found = [u for u, m in self.messages.items() if m.message_id == message_id]
            if not found:
                return "not found"
            uid = found[0]
        message = self.messages.get(uid)
        if message is None:
            return "not found"
        message.flags.add("$ExportArchived")
        if self.move_to_processed:
            self.processed.append(self.messages.pop(uid))
            return "keyword, moved"
        return "keyword"

    def acknowledge_many(self, mails: Sequence[tuple[MailKey, str | None]]) -> list[str]:
        self.batches.append(len(mails))
        return [self.acknowledge(key, message_id) for key, message_id in mails]

    def idle_wait(self, timeout_s: float, interrupted: Callable[[], bool] | None = None) -> bool:
        """Return at once whether mail was delivered since the last open or wait."""
        new_mail = self.next_uid != self.seen_next_uid
        self.seen_next_uid = self.next_uid
        return new_mail

    def close(self) -> None:
        pass


class FakeApi:
    """Hands out sequential job IDs, or raises a scripted error."""

    def __init__(self, first_job_id: int = 5000) -> None:
        self.next_job_id = first_job_id
        self.submitted: list[ExportRequest] = []
        self.error: ApiError | None = None
        self.last_response: str | None = None
        self.statuses: dict[str, str] = {}
        self.sends: list[Send] = []
        """What ``newsletters_sent`` answers (the test sets it)."""
        self.sends_asked: list[int] = []

    def submit(self, request: ExportRequest) -> str:
        self.submitted.append(request)
        if self.error is not None:
            raise self.error
        job_id = str(self.next_job_id)
        self.next_job_id += 1
        return job_id

    def check(self) -> str:
        return "fake account"

    def job_status(self, job_ids: Sequence[str]) -> dict[str, str]:
        return {job_id: self.statuses.get(job_id, "not found") for job_id in job_ids}

    def newsletters_sent(self, days: int) -> list[Send]:
        self.sends_asked.append(days)
        if self.error is not None:
            raise self.error
        return list(self.sends)


class FakeDownloader:
    """Serves payloads by URL; a URL may instead be scripted to raise errors in turn."""

    def __init__(self) -> None:
        self.payloads: dict[str, bytes] = {}
        self.errors: dict[str, list[DownloadError]] = {}
        self.calls: list[str] = []

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        self.calls.append(url)
        scripted = self.errors.get(url)
        if scripted:
            raise scripted.pop(0)
        body = self.payloads[url]
        sink.write(body[: len(body) // 2])
        sink.write(body[len(body) // 2 :])
        document = json.loads(body)
        return DownloadResult(
            bytes=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            records=len(document) if isinstance(document, list) else None,
            top_level="array" if isinstance(document, list) else "object",
            final_url=url.split("?")[0],
            attempts=1,
            elapsed_s=0.0,
        )


class RecordingMetrics:
    """A ``ports.Metrics`` that keeps every call, for tests of what the loop reports."""

    def __init__(self) -> None:
        self.archived: list[tuple[str, int, float | None, float | None]] = []
        self.failures: list[tuple[str, BaseException]] = []
        self.token_failures = 0
        self.samples: list[HealthSample] = []

    def export_archived(
        self, method: str, size_bytes: int, *, download_s: float | None, waited_s: float | None
    ) -> None:
        self.archived.append((method, size_bytes, download_s, waited_s))

    def failure(self, source: str, error: BaseException) -> None:
        self.failures.append((source, error))

    def token_refresh_failed(self) -> None:
        self.token_failures += 1

    def observe_health(self, sample: HealthSample) -> None:
        self.samples.append(sample)

    def kinds(self) -> list[tuple[str, str]]:
        """Each failure as (source, exception class name)."""
        return [(source, type(error).__name__) for source, error in self.failures]
