"""Value types shared by the core and the edges. Stdlib only, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

CONTACT_DATA_METHOD = "GetNewsletterContactDataSummaryAsync"
"""The default export method (every method is in ``inbox_poller.methods``)."""

# Anchored with \Z, not $: "$" also matches before a final newline, so "987654\n" would
# pass, and an ID becomes a path, a ledger key and a request field.
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
"""What a Pinpointe job ID may look like before it is stored or put in a path."""

STAT_ID_RE = re.compile(r"^[0-9]{1,18}\Z")
DATE_RE = re.compile(r"^[0-9]{8}\Z")


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class ExportState(StrEnum):
    """Where one export is in its life. Persisted by value."""

    SUBMITTING = "submitting"
    """The ledger row exists; the submit POST is about to be sent (or its outcome was lost)."""
    SUBMITTED = "submitted"
    """Pinpointe returned a job ID; waiting for the notification mail."""
    NOTIFIED = "notified"
    """A notification mail was matched and its download link stored."""
    DOWNLOADING = "downloading"
    """A download is under way (or was interrupted and will restart)."""
    VERIFIED = "verified"
    """The payload is complete, valid and fsynced under a temporary name; its size, SHA-256
    and final path are recorded. A restart finishes the rename instead of downloading again."""
    ARCHIVED = "archived"
    """The payload is durable on disk and in the manifest; the mail is not yet acknowledged."""
    ACKNOWLEDGED = "acknowledged"
    """The notification mail was keyworded or moved. Final."""
    SUBMIT_FAILED = "submit_failed"
    """Pinpointe refused the request. Final."""
    SUBMIT_UNKNOWN = "submit_unknown"
    """The submit POST was sent but its answer was lost; the job may exist. Needs an operator
    unless a notification reveals the job ID."""
    LINK_EXPIRED = "link_expired"
    """The download link answered 403/404/410. Final, unless a later mail offers another link
    (docs/matching.md §6): then ``notified`` again, with that link."""
    FAILED = "failed"
    """The download or its payload failed for good (see the reason). Final, unless the failure
    was the link's (``Export.failed_links``) and a later mail offers another link."""


FINAL_STATES = frozenset(
    {
        ExportState.ACKNOWLEDGED,
        ExportState.SUBMIT_FAILED,
        ExportState.LINK_EXPIRED,
        ExportState.FAILED,
    }
)

ALLOWED_TRANSITIONS: dict[ExportState, frozenset[ExportState]] = {
    ExportState.SUBMITTING: frozenset(
        {
            ExportState.SUBMITTED,
            ExportState.SUBMIT_FAILED,
            ExportState.SUBMIT_UNKNOWN,
            # a crash after the POST: the notification itself reveals the job ID
            ExportState.NOTIFIED,
        }
    ),
    ExportState.SUBMIT_UNKNOWN: frozenset({ExportState.NOTIFIED, ExportState.SUBMIT_FAILED}),
    ExportState.SUBMITTED: frozenset({ExportState.NOTIFIED, ExportState.FAILED}),
    ExportState.NOTIFIED: frozenset(
        {
            ExportState.DOWNLOADING,
            ExportState.LINK_EXPIRED,
            ExportState.FAILED,
            # a later notification may carry a better link after a refused one
            ExportState.NOTIFIED,
        }
    ),
    ExportState.DOWNLOADING: frozenset(
        {
            ExportState.VERIFIED,
            ExportState.NOTIFIED,  # a transient failure: try again on a later pass
            ExportState.LINK_EXPIRED,
            ExportState.FAILED,
            ExportState.DOWNLOADING,  # restart after a crash
        }
    ),
    ExportState.VERIFIED: frozenset(
        {
            ExportState.ARCHIVED,
            ExportState.DOWNLOADING,  # the verified file vanished: download again
        }
    ),
    ExportState.ARCHIVED: frozenset({ExportState.ACKNOWLEDGED}),
    ExportState.ACKNOWLEDGED: frozenset(),
    ExportState.SUBMIT_FAILED: frozenset(),
    # another link, from a later mail or one kept from a duplicate, is tried (each link
    # once); a FAILED export only when its link was what failed (``Export.failed_links``)
    ExportState.LINK_EXPIRED: frozenset({ExportState.NOTIFIED}),
    ExportState.FAILED: frozenset({ExportState.NOTIFIED}),
}


def can_transition(current: ExportState, wanted: ExportState) -> bool:
    """Return whether the state machine allows going from *current* to *wanted*."""
    return wanted in ALLOWED_TRANSITIONS[current]


@dataclass(frozen=True)
class ExportRequest:
    """What to ask Pinpointe for. Dates are the window as YYYYMMDD, end exclusive
    (``methods.build_details`` writes them in each method's form)."""

    stat: str
    """The stat ID of a ``GetNewsletterContactDataSummaryAsync`` export; "" otherwise."""
    startdate: str | None = None
    enddate: str | None = None
    method: str = CONTACT_DATA_METHOD
    options: str = "{}"
    """The method's other options as canonical JSON (``methods.canonical``)."""
    format: str = "json"
    """The payload format requested (``json``, ``csv`` or ``xml``)."""


@dataclass(frozen=True)
class Send:
    """One newsletter send, as ``GetNewslettersSent`` lists it (docs/pinpointe-api.md §7)."""

    statid: str
    newsletterid: str = ""
    name: str = ""
    starttime: str = ""

    def describe(self) -> str:
        """One line for ``exports`` and the logs."""
        named = f" {self.name!r}" if self.name else ""
        when = f", started {self.starttime}" if self.starttime else ""
        return f"send {self.statid} (newsletter {self.newsletterid or '?'}{named}{when})"


@dataclass(frozen=True)
class MailKey:
    """The identity of one message: (mailbox, UIDVALIDITY, UID), RFC 3501 2.3.1.1."""

    mailbox: str
    uidvalidity: int
    uid: int

    def __str__(self) -> str:
        return f"{self.mailbox}/{self.uidvalidity}/{self.uid}"


@dataclass(frozen=True)
class ArchivedFile:
    """What the archive reports about one durable payload."""

    path: str
    """Relative to the archive directory."""
    bytes: int
    sha256: str
    records: int | None
    top_level: str = "unknown"
    """``array``, ``object`` or the scalar type of the JSON document; ``table`` (CSV),
    ``element`` (XML)."""
    source: str = ""
    """Where it was downloaded from, redacted to scheme://host/path."""
    format: str = "json"
    """What was archived, as it arrived (``json``, ``csv``, ``xml``)."""


@dataclass(frozen=True)
class Export:
    """One ledger row: one export request and everything that happened to it."""

    export_id: int
    request: ExportRequest
    state: ExportState
    created_at: datetime
    updated_at: datetime
    job_id: str | None = None
    reason: str | None = None
    submitted_at: datetime | None = None
    notified_at: datetime | None = None
    archived_at: datetime | None = None
    acknowledged_at: datetime | None = None
    download_url: str | None = None
    message_id: str | None = None
    mail: MailKey | None = None
    attempts: int = 0
    archived: ArchivedFile | None = None
    replaces: int | None = None
    """The export this one resubmitted."""
    resubmits: int = 0
    """How many resubmissions led to this export (0 for an original request)."""
    checked_at: datetime | None = None
    """When Pinpointe's AsyncJobStatus was last asked about it."""
    remote_status: str | None = None
    schedule: str | None = None
    """The ``[[export]]`` schedule that created it, if any."""
    origin: str | None = None
    """For a ``sends`` schedule: the send it was expanded from (docs/schedules.md §5)."""
    failed_links: tuple[str, ...] = ()
    """Download links that failed for this export (expired, invalid payload, given up),
    oldest first: never tried again. When it holds ``download_url``, the export's own
    failure was its link's, and another link may still succeed."""
    manifest_offset: int | None = None
    """Where its manifest line starts (bytes into ``manifest.jsonl``), recorded before the
    line is written, so that a resumed crash looks for the line there and nowhere else;
    ``MANIFEST_OFFSET_UNKNOWN`` for an export verified before offsets were recorded."""


MANIFEST_OFFSET_UNKNOWN = -1
"""``Export.manifest_offset`` of an export left ``verified`` by a version that did not
record offsets: its line, if any, is looked for in the whole manifest, once."""


def link_failed(export: Export) -> bool:
    """Return whether *export* failed because of its link, so that another link may work.

    ``link_expired`` always; ``failed`` when its own link is among its failed links (an
    invalid payload, a refused redirect, retries given up), not when the job failed.
    """
    if export.state is ExportState.LINK_EXPIRED:
        return True
    return (
        export.state is ExportState.FAILED
        and export.download_url is not None
        and export.download_url in export.failed_links
    )


@dataclass(frozen=True)
class Link:
    """A URL found in a mail, with the words that surround or label it."""

    url: str
    text: str = ""
    source: str = "text"
    """``href`` (an HTML anchor), ``text`` (a bare URL in a text part) or ``unwrapped``
    (the target of a tracking redirect found inside another link)."""
    via: str | None = None
    """For ``unwrapped`` links: the URL this one was unwrapped from (itself perhaps
    unwrapped). None for links written in the mail."""


@dataclass(frozen=True)
class Notification:
    """Everything the extractor read out of one mail, without any judgement."""

    message_id: str | None
    sender: str | None
    subject: str
    texts: tuple[str, ...]
    """The decoded text of every text part (HTML reduced to its text)."""
    links: tuple[Link, ...]
    candidate_job_ids: tuple[str, ...] = ()
    """Tokens the mail labels as a job ID ("Job ID: 123", ``?jobid=123``)."""
    defects: tuple[str, ...] = ()
    auth_results: tuple[str, ...] = ()
    """The raw ``Authentication-Results`` values (unfolded, not decoded), top-most first."""
    from_domain: str | None = None
    """The From domain, lower-cased; None unless there is exactly one From field with
    exactly one mailbox and no parse defect (``sender.check_sender`` relies on it)."""


@dataclass(frozen=True)
class MailSummary:
    """What the ledger keeps of a mail that matched nothing yet, to match it again later.

    Never the body: matching looks for known job IDs as whole tokens, so the distinct
    tokens that contain a digit are enough, with the links and the labelled candidates.
    """

    message_id: str | None
    sender: str | None
    subject: str
    tokens: tuple[str, ...]
    """Distinct tokens of the subject and texts that contain a digit (bounded)."""
    links: tuple[Link, ...]
    candidates: tuple[str, ...]
    """The mail's labelled job-ID candidates (``Notification.candidate_job_ids``)."""
    sender_authenticated: bool = False
    """The mail passed the ``[sender]`` check when it was read (False when the check was
    off): re-matching may let it reveal a job ID only then (docs/matching.md §6)."""


class MailOutcome(StrEnum):
    """What became of one mail. Persisted by value."""

    MATCHED = "matched"
    """It is the notification of an export (of several: a digest); its link was stored."""
    DUPLICATE = "duplicate"
    """Another notification for an export that already has one; acknowledged once that
    export is archived, never downloaded again (a new link of it is kept, and tried only
    if the export's own link fails)."""
    UNMATCHED = "unmatched"
    """No export it belongs to (yet). Left in place; re-matched on later passes."""
    REFUSED = "refused"
    """It named an export but cannot be acted on (no or several acceptable links, too large,
    unreadable). Left in place."""


@dataclass(frozen=True)
class LinkVerdict:
    """Whether one link may be the download link, and why."""

    url: str
    kept: bool
    reason: str


@dataclass(frozen=True)
class Pairing:
    """What one mail means for one of the exports it names (a digest names several)."""

    export_id: int
    job_id: str | None
    """The job ID the mail names for it (adopted when the export has none)."""
    outcome: MailOutcome
    """MATCHED: notify the export with ``download_url``; DUPLICATE: it has its link already
    (``download_url``, when set, is kept in case that one fails); REFUSED: not acted on."""
    reason: str
    download_url: str | None = None


@dataclass(frozen=True)
class Match:
    """The pure decision about one mail against the known exports."""

    outcome: MailOutcome
    reason: str
    job_ids: tuple[str, ...] = ()
    """Job IDs found in the mail: known job IDs it mentions, then labelled candidates."""
    links: tuple[LinkVerdict, ...] = ()
    export_id: int | None = None
    """The one export the mail is about; None for a digest (see ``pairings``)."""
    job_id: str | None = None
    download_url: str | None = None
    pairings: tuple[Pairing, ...] = ()
    """Every export the mail is about, each with its own outcome and link: one for a
    plain notification, several for a digest, none when it names no export of ours."""


@dataclass(frozen=True)
class MailRecord:
    """One ledger row about one mail."""

    key: MailKey
    message_id: str | None
    outcome: MailOutcome
    reason: str
    seen_at: datetime
    export_id: int | None = None
    job_ids: tuple[str, ...] = ()
    acknowledged_at: datetime | None = None


@dataclass
class CycleReport:
    """What one pass did, for the CLI and the logs."""

    submitted: list[str] = field(default_factory=list)
    mails_seen: int = 0
    matched: list[str] = field(default_factory=list)
    unmatched: int = 0
    refused: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    acknowledged: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class MailboxStatus:
    """What the selected folder and the server offer, read at SELECT time."""

    folder: str
    """The folder's name on the server (``imap.folder`` spelled the server's way)."""
    uidvalidity: int
    uidnext: int | None
    """None when SELECT did not report it (Courier never does): nothing may depend on it."""
    keywords_allowed: bool
    """PERMANENTFLAGS contains ``\\*``: a custom keyword can be stored."""
    can_move: bool
    has_uidplus: bool
    has_idle: bool


@dataclass(frozen=True)
class FetchedMail:
    """One new message as the mailbox hands it to the core."""

    key: MailKey
    size: int
    raw: bytes | None
    """The whole message, or None when it is larger than ``imap.max_message_bytes`` (then the
    body was never retrieved)."""
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class DownloadResult:
    """What a completed, validated download wrote into its sink."""

    bytes: int
    """Decoded bytes written (what is archived)."""
    sha256: str
    records: int | None
    """Items in the payload's main array, when it has one."""
    top_level: str
    """``array``, ``object`` or the scalar's type."""
    final_url: str
    """The last URL fetched after redirects, redacted (scheme://host/path)."""
    attempts: int
    elapsed_s: float
    format: str = "json"
    """The format the payload arrived in (``json``, ``csv``, ``xml``)."""


class HookState(StrEnum):
    """Where one run of a hook for one export is. Persisted by value."""

    PENDING = "pending"
    """Not run yet, or failed and due again at ``next_at``."""
    DONE = "done"
    """Exited 0."""
    SKIPPED = "skipped"
    """Dropped because the hook is no longer configured."""


@dataclass(frozen=True)
class HookRun:
    """One hook to run (at least once) for one archived export (docs/hooks.md)."""

    export_id: int
    job_id: str | None
    hook: str
    """The ``[hooks]`` key: ``on_archived``."""
    payload: str
    """The event as one line of JSON (for ``on_archived``, the export's manifest line)."""
    state: HookState
    attempts: int
    """Runs that failed so far."""
    next_at: datetime
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def failing(self) -> bool:
        return self.state is HookState.PENDING and self.attempts > 0
