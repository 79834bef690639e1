"""Run one hook: a program with its arguments, no shell, a timeout, a bounded output tail.

The program gets the event as JSON on stdin and its own environment (``environment``);
it runs in a new session, so that a timeout or a stop kills it and everything it
started (``SIGTERM`` to the process group, ``SIGKILL`` after :data:`KILL_GRACE_S`).
What it prints is kept only as a short tail, for the failure's reason; a hook that
prints gigabytes costs no memory.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from inbox_poller.safetext import escape_controls

KILL_GRACE_S = 5.0
"""How long a hook has to exit after SIGTERM (a timeout, a stop) before SIGKILL."""
OUTPUT_TAIL_BYTES = 2048
"""How much of a hook's output (stdout and stderr together) is kept, from the end."""
AFTER_EXIT_READ_S = 1.0
"""How long to read output after the hook exits: a child it left behind may hold the
pipe open for good."""
_READ_BYTES = 65536
_POLL_S = 0.2


@dataclass(frozen=True)
class HookResult:
    """How one run of a hook ended."""

    ok: bool
    """It exited with status 0 within its timeout."""
    reason: str
    """``exit 0``, ``exit 3: <last line of output>``, ``timed out after 30s``, ..."""
    duration_s: float
    interrupted: bool = False
    """Stopped by the daemon's shutdown: neither a success nor the hook's failure."""


def _last_line(tail: bytes) -> str:
    lines = [line for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
    return escape_controls(lines[-1].strip())[:300] if lines else ""


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Stop the hook's whole process group: SIGTERM, then SIGKILL after the grace."""
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_hook(
    command: Sequence[str],
    *,
    stdin: bytes,
    env: Mapping[str, str],
    timeout_s: float,
    stop: threading.Event | None = None,
) -> HookResult:
    """Run *command* with *stdin* and *env*; return how it ended. Never raises for the
    hook's own failures (a missing program is a failed run, with the reason)."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        return HookResult(False, f"cannot run {command[0]}: {exc.strerror}", 0.0)
    assert process.stdin is not None and process.stdout is not None
    try:
        with contextlib.suppress(BrokenPipeError):  # a hook that does not read its stdin
            process.stdin.write(stdin)
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        outcome, output = _watch(process, started + timeout_s, stop)
    finally:
        if process.poll() is None:
            _kill(process)
        process.stdout.close()
    duration = time.monotonic() - started
    if outcome == "stopped":
        return HookResult(False, "stopped by shutdown", duration, interrupted=True)
    if outcome == "timeout":
        return HookResult(False, f"timed out after {timeout_s:g}s (killed)", duration)
    status = process.returncode
    tail = _last_line(output)
    if status == 0:
        return HookResult(True, "exit 0", duration)
    reason = f"killed by signal {-status}" if status < 0 else f"exit {status}"
    return HookResult(False, f"{reason}: {tail}" if tail else reason, duration)


def _watch(
    process: subprocess.Popen[bytes], deadline: float, stop: threading.Event | None
) -> tuple[str, bytes]:
    """Read the output until the hook exits (``"exited"``), the *deadline* passes
    (``"timeout"``) or *stop* is set (``"stopped"``); kill it in the last two cases.

    Returns the outcome and the output's last :data:`OUTPUT_TAIL_BYTES`.
    """
    assert process.stdout is not None
    fd = process.stdout.fileno()
    tail = b""
    eof = False
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        if stop is not None and stop.is_set():
            _kill(process)
            return "stopped", tail
        if exited_at is None and now >= deadline:
            _kill(process)
            return "timeout", tail
        if exited_at is not None and (eof or now - exited_at >= AFTER_EXIT_READ_S):
            return "exited", tail
        if not eof:
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if ready:
                chunk = os.read(fd, _READ_BYTES)
                if chunk:
                    tail = (tail + chunk)[-OUTPUT_TAIL_BYTES:]
                else:
                    eof = True
        else:
            time.sleep(_POLL_S / 4)
        if exited_at is None and process.poll() is not None:
            exited_at = time.monotonic()
