"""Running one hook as a real process: stdin, the environment, exit codes, timeouts, stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from inbox_poller.hooks import process
from inbox_poller.hooks.process import run_hook

ENV = {"PATH": "/usr/bin:/bin"}


def _script(tmp_path: Path, body: str, name: str = "hook") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_a_hook_gets_its_stdin_and_exactly_its_environment(tmp_path: Path) -> None:
    hook = _script(
        tmp_path, f"cat > {tmp_path}/stdin\nenv > {tmp_path}/env\npwd > {tmp_path}/cwd\n"
    )
    result = run_hook(
        [hook, "an argument; not for a shell $(x)"],
        stdin=b'{"job_id": "1"}\n',
        env={**ENV, "INBOX_POLLER_JOB_ID": "1"},
        timeout_s=10,
    )
    assert result.ok and result.reason == "exit 0" and not result.interrupted
    assert (tmp_path / "stdin").read_bytes() == b'{"job_id": "1"}\n'
    env = dict(
        line.split("=", 1) for line in (tmp_path / "env").read_text().splitlines() if "=" in line
    )
    assert env["INBOX_POLLER_JOB_ID"] == "1"
    assert set(env) <= {"PATH", "INBOX_POLLER_JOB_ID", "PWD", "SHLVL", "_", "OLDPWD"}
    assert (tmp_path / "cwd").read_text().strip() == "/"


def test_arguments_reach_the_program_as_given(tmp_path: Path) -> None:
    hook = _script(tmp_path, f'printf "%s\\n" "$@" > {tmp_path}/args\n')
    assert run_hook([hook, "a b", "$(touch x)", "*"], stdin=b"", env=ENV, timeout_s=10).ok
    assert (tmp_path / "args").read_text() == "a b\n$(touch x)\n*\n"


def test_a_failure_reports_the_exit_status_and_the_last_line_of_output(tmp_path: Path) -> None:
    hook = _script(
        tmp_path, 'echo "starting"\necho "psql: connection refused\\033[31m" >&2\nexit 3\n'
    )
    result = run_hook([hook], stdin=b"{}", env=ENV, timeout_s=10)
    assert not result.ok
    assert result.reason == "exit 3: psql: connection refused\\x1b[31m"


def test_a_hook_that_does_not_read_its_stdin_is_fine(tmp_path: Path) -> None:
    hook = _script(tmp_path, "exit 0\n")
    assert run_hook([hook], stdin=b"x" * (1 << 20), env=ENV, timeout_s=10).ok


def test_a_missing_or_not_executable_program_is_a_failed_run(tmp_path: Path) -> None:
    result = run_hook([str(tmp_path / "nope")], stdin=b"", env=ENV, timeout_s=10)
    assert (result.ok, result.reason) == (
        False,
        f"cannot run {tmp_path / 'nope'}: No such file or directory",
    )
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")
    result = run_hook([str(plain)], stdin=b"", env=ENV, timeout_s=10)
    assert result.reason.endswith("Permission denied")


def test_a_hook_past_its_timeout_is_killed_with_everything_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "KILL_GRACE_S", 0.5)
    # ignores SIGTERM, and leaves a child of its own
    hook = _script(tmp_path, f"trap '' TERM\nsleep 60 &\necho $! > {tmp_path}/child\nsleep 60\n")
    started = time.monotonic()
    result = run_hook([hook], stdin=b"", env=ENV, timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert (result.ok, result.reason) == (False, "timed out after 0.5s (killed)")
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """A killed process may stay a zombie until PID 1 reaps it: that is not alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_stop_interrupts_a_running_hook(tmp_path: Path) -> None:
    hook = _script(tmp_path, "exec sleep 60\n")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    result = run_hook([hook], stdin=b"", env=ENV, timeout_s=60, stop=stop)
    assert time.monotonic() - started < 3
    assert result.interrupted and not result.ok


def test_a_child_left_holding_the_output_does_not_hold_up_the_result(tmp_path: Path) -> None:
    hook = _script(tmp_path, "sleep 30 &\nexit 0\n")
    started = time.monotonic()
    assert run_hook([hook], stdin=b"", env=ENV, timeout_s=20).ok
    assert time.monotonic() - started < 3


def test_a_hook_printing_a_lot_costs_no_memory(tmp_path: Path) -> None:
    hook = _script(
        tmp_path, "head -c 200000000 /dev/zero | tr '\\0' 'x'\necho\necho last line\nexit 1\n"
    )
    result = run_hook([hook], stdin=b"", env=ENV, timeout_s=60)
    assert result.reason == "exit 1: last line"
