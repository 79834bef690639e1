"""README command 1: the sandbox runs the real loop end to end on its embedded defaults."""

from __future__ import annotations

import json
import os
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


def _sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inbox_poller", "sandbox", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_sandbox_runs_again_in_its_directory_and_its_hint_works_in_a_fresh_shell(
    tmp_path: Path,
) -> None:
    require_dovecot()
    first = _sandbox("--dir", str(tmp_path / "sandbox"), "--records", "50")
    assert first.returncode == 0, first.stdout + first.stderr
    # again, given relatively this time: the same ledger and archive get a second export
    again = subprocess.run(
        [sys.executable, "-m", "inbox_poller", "sandbox", "--dir", "sandbox", "--records", "60"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    manifest = (tmp_path / "sandbox" / "archive" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["records"] for line in manifest] == [50, 60]
    [hint] = [line for line in again.stdout.splitlines() if line.startswith("look at the ledger")]
    command = hint.split(": ", 1)[1]
    assert str(tmp_path / "sandbox" / "config.toml") in command  # absolute, not "sandbox/..."
    # a fresh shell: no virtualenv on $PATH, another working directory (PYTHONPATH only
    # makes the checkout's code the one that runs, as an installed copy would be)
    fresh = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.count("acknowledged") == 2


def test_the_sandbox_refuses_a_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    result = _sandbox("--dir", str(tmp_path / "a-file"))
    assert result.returncode == 2
    assert result.stderr == f"inbox-poller: --dir {tmp_path / 'a-file'}: not a directory\n"
    assert result.stdout == ""


def test_the_sandbox_runs_any_method_and_format_into_one_archive(tmp_path: Path) -> None:
    require_dovecot()
    directory = str(tmp_path / "sandbox")
    runs = [
        ("GetNewsletterStatsAsync", "xml"),
        ("GetSegmentSubscribersAsync", "csv"),
        ("GetTagSubscribersAsync", "json"),
    ]
    for method, fmt in runs:
        result = _sandbox(
            "--dir", directory, "--records", "40", "--method", method, "--format", fmt
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"of {fmt.upper()}, 40 records" in result.stdout
    manifest = (tmp_path / "sandbox" / "archive" / "manifest.jsonl").read_text().splitlines()
    assert [(json.loads(line)["method"], json.loads(line)["format"]) for line in manifest] == runs
    refused = _sandbox("--dir", directory, "--method", "GetListSubscribersAsync", "--format", "csv")
    assert refused.returncode == 2
    assert "does not take format 'csv'" in refused.stderr
