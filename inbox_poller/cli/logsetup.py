"""Logging set-up for the command line: stderr, journald priorities, JSON on request.

Only the command line configures handlers; library modules just log. Under journald
(``$JOURNAL_STREAM`` names our stderr) text lines carry a ``<N>`` priority and no time,
since the journal records both; elsewhere they start with the UTC time. JSON lines always
carry ``time``, and every line about an export carries ``export_id`` and ``job_id``
(``logcontext``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from inbox_poller.logcontext import ContextFilter
from inbox_poller.safetext import escape_controls, escape_json_controls

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
TIMED_TEXT_FORMAT = "%(asctime)s " + TEXT_FORMAT


def utc_timestamp(created: float) -> str:
    """Return *created* (a record's time) as ``2026-11-29T04:41:02.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """One line per record: the message's control characters escaped (``safetext``).

    Messages carry text from mail and servers; a traceback that follows keeps its lines.
    ``%(asctime)s`` is the UTC time, ``2026-11-29T04:41:02.123Z``.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)


class JournalFormatter(TextFormatter):
    """Prefix each line with ``<N>`` so journald records its priority (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC), ``level``, ``logger``, ``message``, and the
    job ID, export, mail UID and a payload's facts when known."""

    KEYS = ("job_id", "export_id", "uid", "path", "bytes", "records", "sha256", "duration_s")
    EXTRA_KEYS = ("exit_code",)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in (*self.KEYS, *self.EXTRA_KEYS):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return escape_json_controls(json.dumps(entry, ensure_ascii=False))


def writes_to_journal(stream: TextIO) -> bool:
    """Return whether *stream* is the journal stream systemd gave us (``$JOURNAL_STREAM``).

    systemd.exec(5): the variable holds the device and inode of the stream connected to
    the journal; it is inherited by children whose stderr may go elsewhere, so it counts
    only when it names *stream*'s own file.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's StringIO), or closed
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


def configure_logging(verbose: bool, log_format: str = "text", *, quiet: bool = False) -> None:
    """Log to stderr (the time only off journald); quiet third-party loggers.

    *verbose* logs DEBUG and up, *quiet* WARNING and up, neither INFO and up.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif writes_to_journal(sys.stderr):
        handler.setFormatter(JournalFormatter(TEXT_FORMAT))
    else:
        handler.setFormatter(TextFormatter(TIMED_TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    # imapclient logs every server line (message bodies, signed links) at DEBUG
    logging.getLogger("imapclient").setLevel(logging.WARNING)
    # urllib3 logs request paths with their signed query strings at DEBUG
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # APScheduler logs every run of every job at INFO (~14 lines a minute while idle); its
    # misses and failures are WARNING and up, and the daemon reports them itself too
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # the token libraries log token-cache events and request details at DEBUG (msal masks
    # tokens, but a library's masking is not ours to rely on); inbox_poller.oauth reports
    for library in ("msal", "google", "authlib"):
        logging.getLogger(library).setLevel(logging.WARNING)


def report_final_error(message: str, exit_code: int, log_format: str) -> None:
    """Print the line that ends a failed command: ``inbox-poller: …`` as text, or one JSON
    object with ``exit_code`` under ``--log-format json``."""
    if log_format != "json":
        print(f"inbox-poller: {message}", file=sys.stderr)
        return
    record = logging.LogRecord(
        "inbox_poller.cli", logging.ERROR, __file__, 0, "%s", (message,), None
    )
    record.exit_code = exit_code
    print(JsonFormatter().format(record), file=sys.stderr)
