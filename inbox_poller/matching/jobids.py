"""Find job IDs in a mail: tokens it labels as one, and known IDs it mentions (pure, no I/O).

Two searches, stated in docs/matching.md §5. *Candidates* are what the mail
itself labels as a job ID ("Job ID: 123", ``?jobid=123``, ``X-Job-ID``), found
without knowing our exports. *Known* job IDs are searched for as whole tokens
once the ledger's IDs are known. Both run on attacker-controlled text: bounded
quantifiers only, linear scans.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlsplit

from inbox_poller.matching.links import BARE_URL_RE, split_params
from inbox_poller.models import Link

MIN_JOB_ID_CHARS = 3
"""The shortest job ID looked for: a bare "42" occurs in too many places."""
MAX_HEADER_IDS = 5
"""Tokens taken from one job-ID header."""
MAX_TOKEN_CHARS = 256
"""A labelled value longer than this is no job ID (at most 64 characters, plus extensions)."""

# "Job ID: 123", "job #123", "jobid=123", "Job 123", "export id 123", "Export 123",
# "request id 123", '"jobId": "123"'. Bounded quantifiers only: this runs on
# attacker-controlled text.
_JOB_LABEL_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9])"
    r"(?:async[ _-]?)?(?:(?:export|async)[ _-]?)?"
    r"(?P<label>jobs?|exports?|requests?)"
    r"(?P<suffix>[ _-]?(?:identifiers?|ids?|numbers?|nos?\.?|num|nr\.?|n[°º]|refs?|#|№)"
    r"(?![A-Za-z]))?"
    r"(?P<sep>[\s:#=\"'()\[\]\-“”‘’«»„：]{0,6})"
    r"(?:is[\s:]{1,3})?"
    r"(?P<value>[A-Za-z0-9][A-Za-z0-9._-]{0,80})"
)
_JOB_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
_LIST_NEXT_RE = re.compile(r"^\s*(?:,|and|&)\s*([A-Za-z0-9][A-Za-z0-9._-]{2,63})")
_NOT_AN_ID_RE = re.compile(
    r"^(?:\d{4}[-./]\d{1,2}(?:[-./]\d{1,2})?|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d+(?:[.,]\d+)+)$"
)
FILE_EXTENSIONS: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".gz", ".csv", ".zip")
FILE_EXTENSIONS += (".xml", ".txt", ".tgz", ".tar", ".zst")
"""Ends of a token that name a file, not a job ID ("123456.json.gz" is job 123456)."""
_JOB_PARAM_NAMES = frozenset(
    {
        "job",
        "jobid",
        "jobids",
        "jobno",
        "jobnumber",
        "jobref",
        "exportid",
        "exportjob",
        "exportjobid",
        "asyncjobid",
        "asyncjob",
    }
)
_JOB_PATH_SEGMENTS = frozenset({"job", "jobs", "jobid", "asyncjob", "asyncjobs", "exportjob"})
_JOB_HEADER_RE = re.compile(r"(?i)^x-(?:[a-z0-9]+-){0,3}(?:async-)?(?:job|export)(?:-?id)?$")
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,63}")
"""A word that could be a job ID: what matching searches for, and what re-matching keeps."""
_PIECE_RE = re.compile(r"[a-z0-9]+")
_PIECE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, so every character keeps its index (``"İ".lower()``
    is two characters)."""
    if text.isascii():  # a flag CPython keeps: free; lower() of ASCII text is the same
        return text.lower()  # and 3x faster than translate (matching calls this per mail)
    return text.translate(_ASCII_LOWER)


def url_forms(url: str) -> tuple[str, str, str]:
    """Return *url* raw, percent-decoded once and twice: where a job ID may be written."""
    once = unquote(url)
    return url, once, unquote(once)


# --- candidates: what the mail labels as a job ID -----------------------------------


def find_candidate_job_ids(
    subject: str,
    texts: Sequence[str],
    links: Sequence[Link],
    extra: Sequence[str] = (),
) -> tuple[str, ...]:
    """Return the tokens the mail labels as a job ID, de-duplicated in order of appearance.

    Sources: the subject and texts ("Job ID: 123", "export 123"), link query
    parameters (``jobid=123``) and path segments (``/jobs/123/``), and vendor
    headers (*extra*, from :func:`header_job_ids`). A value is 3-64 characters of
    ``[A-Za-z0-9._-]`` with a digit; dates, decimals and file extensions are not job IDs.
    """
    found: list[str] = []
    for text in (subject, *texts):
        found += _labelled_ids(BARE_URL_RE.sub(" ", text))
    for link in links:
        found += url_job_ids(link.url)
    found += list(extra)
    result: dict[str, None] = {}  # in order of appearance; a list was quadratic here
    for value in found:
        cleaned = _clean_job_id(value)
        if cleaned:
            result.setdefault(cleaned)
    return tuple(result)


def header_job_ids(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Return the tokens of vendor headers such as ``X-Job-ID`` or ``X-Export-Id``."""
    tokens: list[str] = []
    for name, value in headers:
        if _JOB_HEADER_RE.match(name):
            tokens += TOKEN_RE.findall(value)[:MAX_HEADER_IDS]
    return tokens


def _labelled_ids(text: str) -> list[str]:
    values: list[str] = []
    for found in _JOB_LABEL_RE.finditer(text):
        value = found.group("value")
        bare = not found.group("suffix") and not re.search(r"[:#=]", found.group("sep"))
        if bare and found.group("label").lower().startswith("request"):
            continue  # "request 2 of 3": only "request id/#/:" labels a job
        tail = text[found.end() : found.end() + 1]
        if tail == "%":
            continue
        values.append(value)
        plural = (found.group("suffix") or "").rstrip(" .").lower().endswith("s") or found.group(
            "label"
        ).lower().endswith("s")
        if plural:
            values += _list_continuation(text, found.end())
    return values


def _list_continuation(text: str, pos: int) -> list[str]:
    """Read "Job IDs: 111, 222 and 333" past its first value."""
    values: list[str] = []
    for _ in range(10):
        following = _LIST_NEXT_RE.match(text[pos : pos + 80])
        if not following:
            break
        values.append(following.group(1))
        pos += following.end()
    return values


def url_job_ids(url: str) -> list[str]:
    """Return job IDs a URL labels: ``?jobid=123``, ``&export_id=123``, ``/jobs/123/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    values: list[str] = []
    for params in (parts.query, parts.fragment):
        for name, value in split_params(params):
            if _normal_name(name) in _JOB_PARAM_NAMES:
                values += [v for v in re.split(r"[,\s]+", value) if v]
    segments = [unquote(s) for s in parts.path.split("/")]
    for before, after in itertools.pairwise(segments):
        if _normal_name(before) in _JOB_PATH_SEGMENTS and after:
            values.append(after)
    return values


def strip_file_extensions(value: str) -> str:
    """Cut every :data:`FILE_EXTENSIONS` off the end of *value* ("1.json.gz" → "1"), in one
    pass from the end (the pattern it replaces was quadratic in a run of extensions)."""
    end = len(value)
    lower = ascii_lower(value)
    while True:
        for extension in FILE_EXTENSIONS:
            if lower.endswith(extension, 0, end):
                end -= len(extension)
                break
        else:
            return value[:end]


def _normal_name(name: str) -> str:
    return re.sub(r"[-_.\s]", "", name).lower()


def _clean_job_id(value: str) -> str | None:
    value = value.strip()
    if len(value) > MAX_TOKEN_CHARS:
        return None  # no job ID, even once file extensions are cut off
    value = strip_file_extensions(value).rstrip("._-")
    if not _JOB_VALUE_RE.match(value) or not any(c.isdigit() for c in value):
        return None
    if not value[0].isalnum() or _NOT_AN_ID_RE.match(value):
        return None
    return value


# --- known job IDs: whole-token search ----------------------------------------------


def id_key(job_id: str) -> str | None:
    """Return the piece :func:`find_known_ids` looks *job_id* up by: its first alphanumeric
    run, lower-cased; None when it does not start with one (then it is never found bare)."""
    first = _PIECE_RE.match(ascii_lower(job_id))
    return first.group(0) if first is not None else None


def text_pieces(texts: Iterable[str]) -> set[str]:
    """Return every alphanumeric run of *texts*, lower-cased: a job ID found in them as a
    whole token has its :func:`id_key` among these."""
    return {piece for text in texts for piece in _PIECE_RE.findall(ascii_lower(text))}


def find_known_ids(texts: Iterable[str], job_ids: Iterable[str]) -> set[str]:
    """Return which of *job_ids* (lower-cased) occur in *texts* as whole tokens.

    A whole token starts and ends where an alphanumeric run does: "export_123456.json"
    and "(123456)" contain "123456", "x123456" and "1234567" do not. Comparison
    ignores ASCII case. Linear in the text: only alphanumeric runs equal to the
    first run of some job ID are examined.
    """
    by_first: dict[str, list[str]] = {}
    for job_id in {ascii_lower(j) for j in job_ids if j}:
        first = _PIECE_RE.match(job_id)
        if first is not None and first.start() == 0:
            by_first.setdefault(first.group(0), []).append(job_id)
    found: set[str] = set()
    if not by_first:
        return found
    for text in texts:
        lower = ascii_lower(text)
        # the runs are listed in one pass in C; only the runs that start a job ID are
        # then looked for, each occurrence that is a whole run of its own
        for key in by_first.keys() & set(_PIECE_RE.findall(lower)):
            start = lower.find(key)
            while start >= 0:
                if _run_at(lower, start, start + len(key)):
                    found.update(j for j in by_first[key] if _whole_token_at(lower, start, j))
                start = lower.find(key, start + 1)
    return found


def _run_at(lower: str, start: int, end: int) -> bool:
    """Whether ``lower[start:end]`` is a whole alphanumeric run (a match of ``_PIECE_RE``)."""
    before = start > 0 and lower[start - 1] in _PIECE_CHARS
    return not before and (end == len(lower) or lower[end] not in _PIECE_CHARS)


def _whole_token_at(lower: str, start: int, job_id: str) -> bool:
    end = start + len(job_id)
    if not lower.startswith(job_id, start):
        return False
    runs_on = end < len(lower) and lower[end].isascii() and lower[end].isalnum()
    return not (runs_on and job_id[-1].isalnum())
