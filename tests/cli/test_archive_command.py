"""``inbox-poller archive verify``: the archive against its manifest, exit 1 on a problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inbox_poller.cli import main
from tests.test_archive_reader import archive_of

CONFIG = """\
[pinpointe]
api_url = "https://na01.mypinpointe.com/apijson.php"
username = "u@example.com"
usertoken_env = "NO_SUCH_TOKEN"
notify_email = "n@example.com"

[imap]
host = "imap.example.com"
username = "u@example.com"
password_env = "NO_SUCH_PASSWORD"

[archive]
dir = "archive"

[state]
path = "state.db"
"""


def test_a_sound_archive_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive_of(tmp_path / "archive", {"1": b"[1]", "2": b'{"data": {"item": [1, 2]}}'})
    assert main(["archive", "verify", "--dir", str(tmp_path / "archive")]) == 0
    out = capsys.readouterr().out
    assert "2 manifest line(s), 2 payload(s)" in out and out.rstrip().endswith(": ok")


def test_each_problem_is_printed_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = archive_of(tmp_path / "archive", {"1": b"[1]"})
    (archive.root / "stray.json").write_text("[]")
    (tmp_path / "config.toml").write_text(CONFIG)
    assert main(["-c", str(tmp_path / "config.toml"), "archive", "verify"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "stray: stray.json: not named by the manifest"
    assert lines[-1].endswith(": 1 problem(s)")


def test_json_lists_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = archive_of(tmp_path / "archive", {"1": b"[1]"})
    [payload] = [p for p in archive.root.rglob("*.json")]
    payload.write_bytes(b"[2]")  # a flipped byte
    assert main(["archive", "verify", "--json", "--dir", str(archive.root)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["lines"] == 1
    assert [p["kind"] for p in report["problems"]] == ["sha256"]


def test_a_missing_configuration_is_a_configuration_error(tmp_path: Path) -> None:
    assert main(["-c", str(tmp_path / "none.toml"), "archive", "verify"]) == 78


def test_verify_needs_its_subcommand() -> None:
    assert main(["archive"]) == 2
