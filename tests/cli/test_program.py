"""The command line's own checks: arguments refused before anything is read or sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_poller.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "--stat", "4711\n"],
        ["submit", "--stat", "4711", "--start", "20261101\n"],
        ["submit", "--stat", "4711", "--end", "20261102\n"],
    ],
)
def test_an_id_or_date_with_a_trailing_newline_is_a_usage_error(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-config.toml"  # never read: the arguments fail first
    assert main(["-c", str(missing), *argv]) == 2
    err = capsys.readouterr().err
    assert "is not a" in err
    assert not (tmp_path / "state").exists()


def test_inspect_email_shows_a_digests_pairing_as_text_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    monkeypatch.delenv("INBOX_POLLER_CONFIG", raising=False)
    eml = Path(__file__).parents[1] / "data" / "eml" / "45_digest_two_exports.eml"
    pending = ["--pending", "482913075", "--pending", "590174263"]
    assert main(["inspect-email", str(eml), *pending, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(p["job_id"], p["outcome"]) for p in report["pairing"]] == [
        ("482913075", "matched"),
        ("590174263", "matched"),
    ]
    assert main(["inspect-email", str(eml), *pending]) == 0
    text = capsys.readouterr().out
    assert "Digest:     2 exports, each with its own link" in text
    assert "  job 590174263: matched, https://exports.mypinpointe.com/files/590174263/" in text
