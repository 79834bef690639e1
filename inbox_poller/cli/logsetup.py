"""Logging set-up for the command line: stderr, no timestamps, journald priorities.

Only the command line configures handlers; library modules just log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from inbox_poller.safetext import escape_controls, escape_json_controls

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class TextFormatter(logging.Formatter):
    """One line per record: the message's control characters escaped (``safetext``).

    Messages carry text from mail and servers; a traceback that follows keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JournalFormatter(TextFormatter):
    """Prefix each line with ``<N>`` so journald records its priority (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the job ID, export and mail UID when known."""

    KEYS = ("job_id", "export_id", "uid")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in self.KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return escape_json_controls(json.dumps(entry, ensure_ascii=False))


def configure_logging(verbose: bool, log_format: str = "text", *, quiet: bool = False) -> None:
    """Log to stderr without timestamps (journald adds them); quiet third-party loggers.

    *verbose* logs DEBUG and up, *quiet* WARNING and up, neither INFO and up.
    """
    handler = logging.StreamHandler(sys.stderr)
    text = "%(levelname)s %(name)s: %(message)s"
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(JournalFormatter(text))
    else:
        handler.setFormatter(TextFormatter(text))
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
