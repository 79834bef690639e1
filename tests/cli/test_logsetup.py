"""Log lines stay one line each, and text from mail cannot drive the reader's terminal."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from inbox_poller.cli.logsetup import (
    JournalFormatter,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    writes_to_journal,
)
from inbox_poller.cli.program import main
from inbox_poller.logcontext import ContextFilter, log_context
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


def test_json_lines_carry_a_utc_time_and_the_payloads_facts() -> None:
    record = _record("archived")
    record.created = 1_795_000_000.25
    record.bytes = 5242880
    record.sha256 = "ab" * 32
    record.duration_s = 1.234
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2026-11-18T11:06:40.250Z"
    assert (entry["bytes"], entry["sha256"], entry["duration_s"]) == (5242880, "ab" * 32, 1.234)


def test_a_log_context_names_the_export_on_lines_that_do_not() -> None:
    handler_filter = ContextFilter()
    with log_context(export_id=7, job_id="987654"):
        inside = _record("downloading")
        handler_filter.filter(inside)
        own = _record("another export")
        own.export_id = 8
        handler_filter.filter(own)
    outside = _record("idle")
    handler_filter.filter(outside)
    assert (inside.export_id, inside.job_id) == (7, "987654")  # type: ignore[attr-defined]
    assert own.export_id == 8  # type: ignore[attr-defined]
    assert not hasattr(outside, "export_id")


def test_journald_is_recognised_only_when_journal_stream_names_our_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert writes_to_journal(stream)
        # inherited by a child whose stderr went elsewhere
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino + 1}")
        assert not writes_to_journal(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not writes_to_journal(stream)


def _configured_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, journal: bool) -> str:
    path = tmp_path / f"stderr-{journal}"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with path.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        info = os.fstat(stream.fileno())
        if journal:
            monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        else:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        try:
            configure_logging(verbose=False)
            logging.getLogger("inbox_poller.service").info("daemon: ready")
        finally:
            root.handlers[:], level = saved
            root.setLevel(level)
    return path.read_text(encoding="utf-8")


def test_text_lines_carry_the_time_except_under_journald(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = _configured_line(monkeypatch, tmp_path, journal=False)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO inbox_poller.service: daemon: ready\n", plain
    ), plain
    journal = _configured_line(monkeypatch, tmp_path, journal=True)
    assert journal == "<6>INFO inbox_poller.service: daemon: ready\n"  # journald has the time


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_final_error_line_follows_the_log_format(
    log_format: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    code = main(["-c", str(missing), "--log-format", log_format, "status"])
    assert code == 78
    err = capsys.readouterr().err.strip()
    if log_format == "text":
        assert err == f"inbox-poller: configuration error: {missing}: no such file " + (
            "(use -c PATH or $INBOX_POLLER_CONFIG)"
        )
    else:
        entry = json.loads(err)
        assert entry["level"] == "error" and entry["exit_code"] == 78
        assert entry["message"].startswith(f"configuration error: {missing}: no such file")
        assert entry["time"].endswith("Z")
