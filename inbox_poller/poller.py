"""One pass of the loop: submit, read the mailbox, match, download, archive, acknowledge.

The Protocols below are the contracts the core holds its edges to. Each edge
module (``mailbox``, ``api``, ``download``, ``archive``, ``store``) implements
one of them; tests substitute fakes that implement the same Protocols.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from inbox_poller.models import (
    DownloadResult,
    ExportRequest,
    FetchedMail,
    MailboxStatus,
    MailKey,
)


class Mailbox(Protocol):
    """The dedicated notification mailbox (``mailbox.ImapMailbox``)."""

    def open(self) -> MailboxStatus:
        """Connect, log in and select the folder read-write.

        Creates ``processed_folder`` when it is configured and missing.
        :raises MailboxLoginError: the credentials are refused.
        :raises MailboxError: anything else (connection, TLS, protocol).
        """
        ...

    def fetch_new(self, after_uid: int) -> Iterator[FetchedMail]:
        """Yield the messages with UID > *after_uid*, in ascending UID order.

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

    def close(self) -> None:
        """Log out; never raises."""
        ...


class ExportApi(Protocol):
    """Pinpointe's JSON API (``api.PinpointeApi``)."""

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


class PayloadSink(Protocol):
    """Where a download writes the decoded payload (``archive.PartFile``)."""

    def write(self, data: bytes) -> None:
        """Append *data*. :raises ArchiveError:"""
        ...

    def restart(self) -> None:
        """Discard everything written so far (a retry starts from byte zero)."""
        ...


class Downloader(Protocol):
    """The safe HTTPS fetcher (``download.SafeDownloader``)."""

    def download(self, url: str, sink: PayloadSink) -> DownloadResult:
        """Fetch *url* into *sink*, validating the JSON to its end.

        :raises DownloadRefused: the URL, a redirect or a resolved address is not allowed
            (raised before any connection to it).
        :raises LinkExpired: 403, 404 or 410.
        :raises PayloadTooLarge: over ``download.max_bytes`` (declared or decoded).
        :raises PayloadInvalid: not one complete JSON document.
        :raises DownloadTransient: 5xx/429/reset/timeout/truncation after the retries.
        """
        ...
