"""The exception tree: every error inbox-poller raises on purpose, in this one file.

One root, one subclass per edge or concern. Edges translate library exceptions
(``IMAPClientError``, ``OSError``, ``requests.RequestException``, ``sqlite3.Error``)
into these with ``raise ... from exc``. Whether an error is worth retrying is a class
attribute, never decided by matching message text.

A few exceptions are not errors but local control flow, caught by the module next to
the one that raises them, and so live there, outside this tree:
``urlpolicy.UrlRefused`` (a link fails the URL policy; the caller turns it into a
verdict or a ``DownloadRefused``), ``matching.authresults.UnreadableField`` (one
``Authentication-Results`` field cannot be parsed), ``download.failures.RetryableFailure``
(one try of a download failed; the fetcher tries again) and
``download.validation.CountingAbandoned`` (one record is too large to count; the payload
is validated again without counting) and ``imap.names.FolderNameError`` (a configured
folder name cannot be spelled on this server; ``imap.folder`` reports it).
"""

from __future__ import annotations


class InboxPollerError(Exception):
    """Root of every error inbox-poller raises on purpose."""

    retryable: bool = False


class ConfigError(InboxPollerError):
    """Raised when the configuration file is missing, unreadable or invalid.

    ``problems`` holds every (key, message) found, so that one run lists them all; the
    message shows one on the same line, several on a line each.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        problems: list[tuple[str | None, str]] | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.problems = problems or [(key, message)]
        where = path or "<config>"
        if key:
            where = f"{where}: {key}"
        super().__init__(f"{where}: {message}")

    @classmethod
    def listing(cls, problems: list[tuple[str | None, str]], *, path: str) -> ConfigError:
        """Return the error for *problems* (at least one) found in the file at *path*."""
        if len(problems) == 1:
            key, message = problems[0]
            return cls(message, path=path, key=key)
        lines = [f"{len(problems)} problems:"]
        lines += [f"  {key}: {message}" if key else f"  {message}" for key, message in problems]
        return cls("\n".join(lines), path=path, key=None, problems=problems)


class StoreError(InboxPollerError):
    """Raised when the ledger cannot be opened, migrated or written."""


class LedgerUnavailable(StoreError):
    """Raised when a PostgreSQL ledger cannot be reached for now: the server is down or
    restarting, the connection was lost (a transaction it cut was rolled back by the
    server, or its commit's outcome is unknown), or a statement or lock wait timed out.
    Nothing is recorded as failed for it: the work is tried again once the ledger is back
    (docs/scale-out-ledger.md, "Robustness and migration").

    ``outcome_unknown`` is true when the connection was lost at ``COMMIT``: the change
    may or may not be in the ledger, so nothing that depends on it may be undone."""

    retryable = True

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message)


class DuplicateSubmission(StoreError):
    """Raised when a schedule's export already holds its slot in the ledger (a racing fire)."""


class LedgerMissing(StoreError):
    """Raised when a command that only reads finds no ledger file (it never creates one)."""

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(f"no ledger at {path} (has the daemon run?)")


class IllegalTransition(StoreError):
    """Raised when a state change does not start from an allowed state."""

    def __init__(self, export_id: int, current: str, wanted: str) -> None:
        self.export_id = export_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"export {export_id}: cannot go from {current} to {wanted}")


class LeaseLost(StoreError):
    """A daemon's lease on an export ran out and another daemon took the export over.

    Raised by a transition made for an *owner* that no longer holds the export (several
    daemons on one ledger, docs/scale-out-ledger.md): the change is refused, so
    the late daemon cannot write over the new owner's work; it drops its own.
    """

    def __init__(self, export_id: int, owner: str, holder: str | None) -> None:
        self.export_id = export_id
        self.owner = owner
        self.holder = holder
        where = f"now held by {holder}" if holder else "no longer in flight"
        super().__init__(
            f"export {export_id}: {owner} lost its lease ({where}); its work is dropped"
        )


class MailboxError(InboxPollerError):
    """Raised when the IMAP server cannot be reached, refuses us, or misbehaves."""

    retryable = True


class MailboxLoginError(MailboxError):
    """Raised when the IMAP server rejects the configured credentials."""

    retryable = False


class TokenError(MailboxError):
    """Raised when no OAuth2 access token can be had for the IMAP login right now: the token
    endpoint failed for a reason that may go away (5xx, 429, timeout, connection refused), or
    inbox-poller is holding back to stay within its bound on token requests
    (docs/reliability.md §2.8)."""

    retryable = True


class TokenRefused(TokenError):
    """Raised when the token endpoint refused the grant for good: ``invalid_grant`` (a revoked,
    expired or already rotated refresh token), a wrong client secret, consent withdrawn, an
    unknown client or scope. The message says what a person must do; nothing changes until
    they do (a new refresh token, secret or consent), so it is not retried in a loop."""

    retryable = False


class ProcessedFolderError(MailboxError):
    """Raised when ``imap.processed_folder`` cannot be found or created on the server.

    The session stays usable: mail is still read and archived; only the move of the
    acknowledgement waits (the message names the namespace and a spelling that works).
    """

    retryable = False


class ApiError(InboxPollerError):
    """Raised when a Pinpointe API call fails.

    ``definitive`` is true when Pinpointe answered and said no (FAILED/ERROR,
    HTTP 400/401): the request certainly did not create an export. It is false
    when the outcome is unknown (timeout, connection lost, unreadable answer):
    the export may exist, so it must never be submitted again blindly.
    """

    def __init__(self, message: str, *, status: int | None = None, definitive: bool = True) -> None:
        self.status = status
        self.definitive = definitive
        super().__init__(message)


class ApiUnavailable(ApiError):
    """Raised when the request never reached Pinpointe (connection refused, connect timeout,
    name not resolved) or Pinpointe answered HTTP 429: nothing was created; try again later."""

    retryable = True

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status, definitive=True)
        self.retry_after_s = retry_after_s


class ApiAuthError(ApiError):
    """Raised when Pinpointe rejects the username or token (HTTP 401)."""


class DownloadError(InboxPollerError):
    """Raised when a payload cannot be downloaded or is not acceptable."""


class DownloadRefused(DownloadError):
    """Raised before any connection when a URL or the address it resolves to is not allowed."""


class LinkExpired(DownloadError):
    """Raised when the download link answers 403, 404 or 410."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"the download link answered HTTP {status}: treated as expired")


class PayloadInvalid(DownloadError):
    """Raised when the downloaded bytes are not one complete, valid JSON document."""


class PayloadTooLarge(DownloadError):
    """Raised when the payload (declared or decoded) exceeds ``download.max_bytes``."""


class DownloadTransient(DownloadError):
    """Raised when a download failed for a reason that may go away (5xx, 429, reset, timeout,
    truncated body) and the retries of this attempt are used up."""

    retryable = True


class ArchiveError(InboxPollerError):
    """Raised when the archive directory cannot be written safely."""


class ArchiveUnavailable(ArchiveError):
    """Raised when the archive's store failed for a moment (an S3 endpoint unreachable,
    timing out, or answering 5xx/SlowDown): the download is tried again, as a transient
    download failure is."""

    retryable = True


class ArchiveReadError(ArchiveError):
    """Raised by ``archive_reader`` when a manifest line or a payload cannot be read."""


class ExtractError(InboxPollerError):
    """Raised when a mail cannot be parsed at all."""


class MailTooCostly(ExtractError):
    """Raised when reading a mail would cost more than its budget: a header, part count or
    nesting over the parser's caps, or the worker's time or memory spent
    (docs/reliability.md §4.3). The message starts with "too costly to read: "."""

    def __init__(self, what: str) -> None:
        super().__init__(f"too costly to read: {what}")


class ReaderUnavailable(InboxPollerError):
    """Raised when the worker process that reads mail cannot be started: no mail is to
    blame, so none is recorded, and the pass stops until the next one."""

    retryable = True


class MetricsError(InboxPollerError):
    """Raised when ``[metrics] listen`` cannot be served (the address is taken or not ours)."""


class UsageError(InboxPollerError):
    """Raised for command-line arguments that parse but make no sense (exit status 2)."""
