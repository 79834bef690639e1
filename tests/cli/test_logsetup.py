"""Log lines stay one line each, and text from mail cannot drive the reader's terminal."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from inbox_poller.cli.logsetup import (
    JournalFormatter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
)
from inbox_poller.safetext import escape_controls

# red-team finding 5 of issue 9: ESC, BEL, U+202E and U+009B from a subject or sender
HOSTILE = "Export ready\x1b[2J\x07 from \u202egpj.exe\u009b31m\nINFO forged: line"
RAW = ("\x1b", "\x07", "\u202e", "\u009b", "\n")


def _record(message: str, *, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "inbox_poller.loop",
        logging.WARNING,
        __file__,
        1,
        "uid %s: %s",
        ("1/2/3", message),
        exc_info,
    )


@pytest.mark.parametrize(
    "formatter",
    [TextFormatter("%(levelname)s %(name)s: %(message)s"), JournalFormatter("%(message)s")],
    ids=["text", "journal"],
)
def test_text_logs_escape_control_and_direction_characters(formatter: logging.Formatter) -> None:
    line = formatter.format(_record(HOSTILE))
    assert not any(char in line for char in RAW), repr(line)
    assert "\\x1b[2J" in line and "\\u202e" in line and "\\x9b" in line and "\\x0a" in line


def test_a_traceback_keeps_its_lines_but_the_message_does_not_gain_any() -> None:
    text = TextFormatter("%(message)s").format(_record(HOSTILE, exc=True))
    first, *rest = text.split("\n")
    assert "forged" in first and rest[0].startswith("Traceback")
    assert "ValueError: boom" in text


def test_json_logs_are_safe_to_print_and_decode_to_the_original() -> None:
    line = JsonFormatter().format(_record(HOSTILE))
    assert not any(char in line for char in RAW), repr(line)
    assert json.loads(line)["message"] == f"uid 1/2/3: {HOSTILE}"


def test_escaping_leaves_ordinary_text_alone() -> None:
    text = "Ihr Export für Kampagne 4711 ist bereit – 完成 ✓"
    assert escape_controls(text) == text


def test_third_party_chatter_is_kept_out_of_the_default_journal() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(verbose=False)
    try:
        for name in ("apscheduler", "apscheduler.scheduler", "imapclient", "urllib3"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger("apscheduler").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
