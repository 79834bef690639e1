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
