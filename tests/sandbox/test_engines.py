"""What the throwaway engines share (inbox_poller/sandbox/engines.py), on real processes."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = engines.free_ports(12, "a test")
    assert len(set(ports)) == 12
    assert all(engines.PORT_RANGE[0] <= port < engines.PORT_RANGE[1] for port in ports)
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[0]))
        held.listen()
        assert not engines.port_is_free(ports[0])
    assert engines.port_is_free(ports[0])


def test_an_engine_that_cannot_bind_says_its_port_is_taken(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("an earlier start: listen: address already in use\nstarted fine\n")
    offset = engines.log_size(log)
    process = engines.launch(
        ["sh", "-c", "echo 'FATAL: could not bind: Address already in use' >&2; exit 1"], log
    )
    with pytest.raises(InboxPollerError, match=r"\(port already in use\): FATAL: could not"):
        engines.wait_until_ready(
            process,
            lambda: False,
            engine="demo",
            log_path=log,
            log_offset=offset,
            timeout_s=10,
        )


def test_an_engine_that_exits_reports_its_last_line_since_the_start(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("an earlier start: listen: address already in use\n")
    offset = engines.log_size(log)
    process = engines.launch(["sh", "-c", "echo 'bad setting x' >&2; exit 3"], log)
    with pytest.raises(InboxPollerError) as caught:
        engines.wait_until_ready(
            process, lambda: False, engine="demo", log_path=log, log_offset=offset, timeout_s=10
        )
    # the earlier start's line is not this start's failure
    assert str(caught.value) == "demo exited with status 3 while starting: bad setting x"


def test_an_engine_that_never_gets_ready_times_out(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    process = engines.launch(["sh", "-c", "echo waiting; exec sleep 60"], log)
    try:
        with pytest.raises(InboxPollerError, match=r"within 0.3s \(last log line: waiting\)"):
            engines.wait_until_ready(
                process, lambda: False, engine="demo", log_path=log, log_offset=0, timeout_s=0.3
            )
    finally:
        engines.stop(process, signal.SIGTERM, engine="demo")
    assert process.returncode is not None


def test_a_stop_kills_what_ignores_the_signal_and_its_children(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    # a leader that ignores SIGTERM, and a child that left the group (as postgres backends do)
    process = engines.launch(["sh", "-c", "trap '' TERM; setsid sleep 60 & sleep 60 & wait"], log)
    deadline = time.monotonic() + 5
    while len(engines.descendants(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    family = engines.descendants(process.pid)
    assert len(family) == 2
    started = time.monotonic()
    engines.stop(process, signal.SIGTERM, engine="demo", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert not engines.alive(process.pid)
    assert [pid for pid in family if engines.alive(pid)] == []
