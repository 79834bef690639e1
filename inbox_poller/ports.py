"""The seams the core holds its network edges to: one ``Protocol`` each, one copy each.

``loop/`` and ``service/`` see the mailbox, the Pinpointe API, the downloader and the
metrics only through these; ``imap/``, ``pinpointe/``, ``download/`` and ``metrics/``
implement them, and the tests' fakes implement the same ones. The ledger is used as
a concrete type. The archive is ``ArchiveStore`` (issue 14): a directory
(``archive.Archive``) or an S3 bucket (``archive.s3.S3Archive``), both tested for real,
never faked.
``AccessTokens`` is the seam between two edges: ``imap/`` logs in with the tokens
``oauth/`` gets, without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import BinaryIO, Protocol

from inbox_poller.models import (
    ArchivedFile,
    DownloadResult,
    Export,
    ExportRequest,
    FetchedMail,
    MailboxStatus,
    MailKey,
    Send,
)

JOB_NOT_FOUND = "not found"
"""The status ``ExportApi.job_status`` reports for a job Pinpointe does not know (any more)."""


class Mailbox(Protocol):
    """The dedicated notification mailbox (``imap.mailbox.ImapMailbox``).

    One object is one session at a time: ``open`` starts it (closing any old one), the
    other calls use it, ``close`` ends it.
    """

    def open(self) -> MailboxStatus:
        """Connect, log in and select the folder read-write.

        Creates ``processed_folder`` when it is configured and missing.
        :raises MailboxLoginError: the credentials are refused.
        :raises MailboxError: anything else (connection, TLS, protocol).
        """
        ...

    def fetch_new(self, after_uid: int, since: date | None = None) -> Iterator[FetchedMail]:
        """Yield the messages with UID > *after_uid*, in ascending UID order.

        With *since*, only those whose internal date falls on that day or later
        (``UID SEARCH ... SINCE``: older mail is skipped by the server, never fetched).

        Each message's ``RFC822.SIZE`` is checked before its body is retrieved
        with ``BODY.PEEK[]`` (which never sets ``\\Seen``); larger ones come
        with ``raw=None``. UIDs are retrieved in chunks of at most 5,000.
        :raises MailboxError:
        """
        ...

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        """Mark one handled mail: keyword (when allowed), then move (when configured).

        When *key*'s UIDVALIDITY is not the folder's current one, the message is
        looked up by its Message-ID instead. Idempotent: a mail already marked or
        already moved is not an error. Returns what was done, for the log:
        ``"keyword"``, ``"moved"``, ``"keyword, moved"``, ``"not found"`` or
        ``"ledger only"`` (no keyword allowed and no processed folder).
        :raises MailboxError:
        """
        ...

    def acknowledge_many(self, mails: Sequence[tuple[MailKey, str | None]]) -> list[str]:
        """Mark several handled mails, each (key, Message-ID) as :meth:`acknowledge` would,
        with one command per step for the whole set (``UID STORE``, ``UID MOVE 1:5,9``);
        return what was done to each, in order. Idempotent.
        :raises MailboxError:
        """
        ...

    def idle_wait(self, timeout_s: float, interrupted: Callable[[], bool] | None = None) -> bool:
        """Wait at most *timeout_s* (less once *interrupted()* is true) for new mail.

        Uses IDLE when the server offers it, else sleeps and sends NOOP. Returns whether
        the server reported new mail. Bounded by *timeout_s* plus the read timeout even
        when the server goes silent.
        :raises MailboxError: the connection dropped or timed out.
        """
        ...

    def close(self) -> None:
        """Log out; never raises."""
        ...


class PayloadSink(Protocol):
    """Where a download writes the decoded payload (``archive.PartFile``)."""

    def write(self, data: bytes | memoryview) -> None:
        """Append *data*. A memoryview is valid only during the call (the downloader
        reuses its buffers): copy the bytes, never keep the object. :raises ArchiveError:"""
        ...

    def restart(self) -> None:
        """Discard everything written so far (a retry starts from byte zero)."""
        ...

    def read_back(self) -> BinaryIO:
        """Open what was written so far for reading from its start; the caller closes it.

        :raises ArchiveError:
        """
        ...


class ArchivePart(PayloadSink, Protocol):
    """One payload on its way into the archive: a part file (``archive.PartFile``) or a
    temporary S3 object (``archive.s3.S3Part``)."""

    @property
    def location(self) -> str:
        """Where the part is (a path, an object key): the ledger records it with
        ``verified``, and :meth:`ArchiveStore.publish` takes it."""
        ...

    def seal(self) -> None:
        """Make every byte written durable where the part is. :raises ArchiveError:"""
        ...

    def discard(self) -> None:
        """Remove the part and anything it left; never raises."""
        ...


class ArchiveStore(Protocol):
    """Where payloads and the manifest go (``archive.Archive``, a directory, or
    ``archive.s3.S3Archive``, a bucket); docs/reliability.md §3.6."""

    def begin(self, export: Export) -> ArchivePart:
        """Start the part *export*'s payload is streamed into. :raises ArchiveError:"""
        ...

    def describe(self, export: Export, result: DownloadResult) -> ArchivedFile:
        """What *export*'s downloaded payload becomes in the archive (its final path)."""
        ...

    def publish(self, part: str, archived: ArchivedFile) -> None:
        """Put the sealed part at *location* under its final name, atomically, never over
        another payload. :raises ArchiveError:"""
        ...

    def drop_part(self, part: str) -> None:
        """Remove the part at *part* if it is still there (its payload is already under
        its final name: a crash came between the two); never raises."""
        ...

    def verify(self, archived: ArchivedFile, candidate: str | None = None) -> bool:
        """Whether *candidate* (a part's location; default: the final name) holds exactly
        *archived* (size and SHA-256)."""
        ...

    def append_manifest(
        self,
        export: Export,
        archived: ArchivedFile,
        now: datetime,
        record: Callable[[int], None],
    ) -> None:
        """Add *export*'s manifest entry once, even across crashes; *record* is called
        with the offset of an appended line, before it is written, when the archive has
        one. :raises ArchiveError:"""
        ...

    def remove_leftovers(self, keep: set[str]) -> list[str]:
        """Remove the parts a previous process did not finish, except those at the
        locations in *keep*; return the locations removed."""
        ...

    def leftover_jobs(self) -> list[str]:
        """The job IDs that have something left in the archive's own area for uploads
        under way (S3: ``.parts/<job_id>/``), which :meth:`remove_leftovers` may not sweep
        (another daemon's upload may be under way); a directory has none."""
        ...

    def clear_leftovers(self, job_id: str, before: datetime) -> list[str]:
        """Remove what is left for *job_id* that was started before *before* (the ledger
        says its export is settled since then); return the locations removed."""
        ...


class Downloader(Protocol):
    """The safe HTTPS fetcher (``download.fetcher.SafeDownloader``)."""

    def download(self, url: str, sink: PayloadSink, *, expected: str = "json") -> DownloadResult:
        """Fetch *url* into *sink*, validating the payload to its end.

        *expected* is the format requested (``json``, ``csv``, ``xml``); what arrives
        confirms it (``download.formats``): JSON is always taken as JSON, HTML never.

        :raises DownloadRefused: the URL, a redirect or a resolved address is not allowed
            (raised before any connection to it).
        :raises LinkExpired: 403, 404 or 410.
        :raises PayloadTooLarge: over ``download.max_bytes`` (declared or decoded).
        :raises PayloadInvalid: not one complete document of the format that arrived, or
            a format that was not asked for.
        :raises DownloadTransient: 5xx/429/reset/timeout/truncation after the retries.
        :raises ArchiveError: the sink could not be written.
        """
        ...


class ExportApi(Protocol):
    """Pinpointe's JSON API (``pinpointe.client.PinpointeApi``)."""

    last_response: str | None
    """The last answer's body (token removed, truncated), kept in the ledger."""

    def submit(self, request: ExportRequest) -> str:
        """POST the async export request once (never retried) and return the job ID.

        :raises ApiError: with ``definitive`` true when Pinpointe refused the
            request, false when the outcome is unknown.
        """
        ...

    def check(self) -> str:
        """Call ``Authentication``/``APITest``; return a one-line description of the account.

        :raises ApiError:
        """
        ...

    def job_status(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Ask ``API``/``AsyncJobStatus``; map each job ID to its lower-cased status.

        A job Pinpointe does not know is :data:`JOB_NOT_FOUND`.
        :raises ApiError:
        """
        ...

    def newsletters_sent(self, days: int) -> list[Send]:
        """Ask ``Newsletters``/``GetNewslettersSent`` for the sends of the last *days* days
        (every page), each once, with a stat ID.

        :raises ApiError:
        """
        ...


class AccessTokens(Protocol):
    """OAuth2 access tokens for the IMAP login (``oauth.tokens.TokenSource``).

    The IMAP edge holds only this seam, never ``oauth/``: ``wiring`` gives it the token
    source the configuration names (docs/reliability.md §2.8).
    """

    def access_token(self) -> str:
        """Return an access token with more than the refresh margin of its lifetime left.

        The token is reused until less than a third of its lifetime (at most 5 minutes)
        remains, then refreshed; it lives in memory only.
        :raises TokenRefused: the grant was refused for good; the message says what a
            person must do.
        :raises TokenError: no token right now (the endpoint failed, or the bound on token
            requests holds it back); worth trying again later.
        """
        ...

    def forget(self, token: str) -> None:
        """Drop *token* from the cache: the IMAP server refused it, so the next login gets a
        fresh one (never in a loop: token requests stay bounded)."""
        ...


@dataclass(frozen=True)
class HealthSample:
    """What the ledger and the health judgement say at one moment, for the gauges."""

    counts: Mapping[str, int]
    """Exports by state (states with none may be missing)."""
    oldest_waiting_at: datetime | None
    """When the oldest export not yet in a final state started waiting."""
    last_pass_at: datetime | None
    """The last successful mailbox pass."""
    overdue: int
    """Exports past their notification deadline."""
    recent_failures: int
    """Exports that ended ``submit_failed``, ``failed`` or ``link_expired`` in the last 24 h."""
    healthy: bool


class Metrics(Protocol):
    """Where the loop and the service report what is counted (``metrics.PrometheusMetrics``).

    Every call is cheap and never raises; :class:`NoMetrics` is the default, so a loop
    without ``[metrics]`` (and every test of it) runs without Prometheus.
    """

    def export_archived(
        self, method: str, size_bytes: int, *, download_s: float | None, waited_s: float | None
    ) -> None:
        """Count one archived payload: its bytes, the download's duration (None when a
        restart only finished a verified one) and the time since it was submitted."""
        ...

    def failure(self, source: str, error: BaseException) -> None:
        """Count one failure of *source* (``"mailbox"``, ``"api"`` or ``"download"``)."""
        ...

    def token_refresh_failed(self) -> None:
        """Count one failed refresh of an OAuth2 access token (called by the token source)."""
        ...

    def observe_health(self, sample: HealthSample) -> None:
        """Set the gauges from *sample* (and write the textfile, when there is one)."""
        ...


class NoMetrics:
    """The :class:`Metrics` that counts nothing: no ``[metrics]`` section, and tests."""

    def export_archived(
        self, method: str, size_bytes: int, *, download_s: float | None, waited_s: float | None
    ) -> None:
        pass

    def failure(self, source: str, error: BaseException) -> None:
        pass

    def token_refresh_failed(self) -> None:
        pass

    def observe_health(self, sample: HealthSample) -> None:
        pass
