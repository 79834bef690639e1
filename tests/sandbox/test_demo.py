"""README command 1: the sandbox runs the real loop end to end on its embedded defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.dovecot import require_dovecot
from tests.plugins.loop import REPO_ROOT

pytestmark = pytest.mark.dovecot


def test_the_sandbox_archives_one_export_and_leaves_a_usable_setup(tmp_path: Path) -> None:
    require_dovecot()
    directory = tmp_path / "sandbox"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inbox_poller",
            "sandbox",
            "--dir",
            str(directory),
            "--records",
            "500",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(equal to what the simulator served)" in result.stdout
    assert "a second pass changes nothing: read 0 mail(s), archived 0" in result.stdout
    [line] = [
        json.loads(x) for x in (directory / "archive" / "manifest.jsonl").read_text().splitlines()
    ]
    assert line["records"] == 500
    listing = subprocess.run(
        [
            sys.executable,
            "-m",
            "inbox_poller",
            "-c",
            str(directory / "config.toml"),
            "exports",
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    [export] = json.loads(listing.stdout)
    assert export["state"] == "acknowledged"
    assert export["sha256"] == line["sha256"]
