"""Tests for the mailbox watcher: IDLE push, the poll floor, back-off and recovery.

Most tests run the watcher in a thread against the real Dovecot (directly, or
through ``TcpProxy`` to stall, cut or refuse the connection). The catch-up pass
is a real one: ``PassRecorder`` fetches above a watermark kept in the test and
records every UID, so "processed exactly once" is checked, not assumed.
Back-off arithmetic and failure containment use a scripted fake mailbox.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import pairwise
from typing import Any

import pytest

from inbox_poller.errors import MailboxError, MailboxLoginError
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.models import FetchedMail, MailboxStatus, MailKey
from inbox_poller.ports import Mailbox
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.service.watcher import MailboxWatcher, backoff_delay
from tests.plugins.dovecot import MakeMailbox, imap_config_for, make_mail
from tests.plugins.tcp_proxy import MakeTcpProxy

needs_dovecot = pytest.mark.dovecot

IDLE_NOTIFY_FLOOR_S = 0.5
"""Dovecot delays IDLE notifications by a fixed 500 ms (docs/dovecot.md)."""


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll *predicate* until true; return the seconds it took, or fail naming *what*."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


class PassRecorder:
    """A real catch-up pass: fetch above the watermark, record each UID, advance."""

    def __init__(self, mailbox: ImapMailbox) -> None:
        self.mailbox = mailbox
        self.watermark = 0
        self.seen: list[int] = []
        self.seen_at: dict[int, float] = {}
        self.passes = 0
        self.statuses: list[MailboxStatus] = []

    def __call__(self, mailbox: Mailbox, status: MailboxStatus) -> None:
        assert mailbox is self.mailbox, "the watcher hands over the session it opened"
        self.statuses.append(status)
        for mail in mailbox.fetch_new(self.watermark):
            self.seen.append(mail.key.uid)
            self.seen_at.setdefault(mail.key.uid, time.monotonic())
            self.watermark = mail.key.uid  # per mail: a pass cut short resumes after it
        self.passes += 1

    def assert_each_once(self, uids: list[int]) -> None:
        assert sorted(self.seen) == sorted(uids), "every UID exactly once, no other"


@dataclass
class Running:
    """A watcher running in its own thread, as the daemon runs it."""

    watcher: MailboxWatcher
    stop: threading.Event
    wake: threading.Event
    thread: threading.Thread
    progress: list[tuple[float, str]]
    errors: list[BaseException] = field(default_factory=list)

    def halt(self, within_s: float = 5.0) -> float:
        """Set stop and join; return how long ``run()`` took to return."""
        started = time.monotonic()
        self.stop.set()
        self.thread.join(within_s)
        assert not self.thread.is_alive(), f"run() did not return within {within_s}s of stop"
        assert not self.errors, f"run() raised: {self.errors!r}"
        return time.monotonic() - started


StartWatcher = Callable[..., Running]


@pytest.fixture
def start_watcher() -> Iterator[StartWatcher]:
    """Return ``start(mailbox, on_pass, **watcher_kwargs)``; every watcher is stopped after."""
    started: list[Running] = []

    def start(
        mailbox: Mailbox, on_pass: Callable[[Mailbox, MailboxStatus], None], **kwargs: Any
    ) -> Running:
        stop, wake = threading.Event(), threading.Event()
        progress: list[tuple[float, str]] = []
        options: dict[str, Any] = {
            "poll_interval_s": 60.0,
            "idle_timeout_s": 1.0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "rng": random.Random(7),
            "on_progress": lambda what: progress.append((time.monotonic(), what)),
        }
        options.update(kwargs)
        watcher = MailboxWatcher(mailbox, on_pass, stop=stop, wake=wake, **options)
        running = Running(watcher, stop, wake, threading.Thread(target=lambda: None), progress)

        def target() -> None:
            try:
                watcher.run()
            except BaseException as exc:  # recorded: run() must never raise
                running.errors.append(exc)

        running.thread = threading.Thread(target=target, name="test-watcher", daemon=True)
        running.thread.start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.halt()


def start_after_first_pass(
    start_watcher: StartWatcher, mailbox: ImapMailbox, **kwargs: Any
) -> tuple[Running, PassRecorder]:
    """Start a watcher recording its passes; return once its catch-up pass is done."""
    recorder = PassRecorder(mailbox)
    running = start_watcher(mailbox, recorder, **kwargs)
    wait_until(lambda: recorder.passes >= 1, 5, "the first pass")
    return running, recorder


def _imap_pids(server: DovecotServer) -> list[int]:
    """The PIDs of the test user's imap sessions (``doveadm who -1``)."""
    out = subprocess.run(
        ["doveadm", "-c", str(server.config_path), "who", "-1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return [
        int(fields[2])
        for fields in (line.split() for line in out.splitlines()[1:])
        if len(fields) >= 3 and fields[0] == server.user and fields[2].isdigit()
    ]


# ---- against the real Dovecot ---------------------------------------------------------


@needs_dovecot
def test_idle_push_delivers_new_mail_within_two_seconds(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    start_watcher: StartWatcher,
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    recorder = PassRecorder(mailbox)
    running = start_watcher(mailbox, recorder, idle_timeout_s=5.0)  # poll far away: IDLE only
    wait_until(lambda: recorder.passes >= 1 and running.watcher.state == "idle", 5, "catch-up")
    time.sleep(0.2)  # let the first IDLE start

    appended_at = time.monotonic()
    uid = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: uid in recorder.seen, 2.5, "the IDLE notification")
    latency = recorder.seen_at[uid] - appended_at
    assert latency < 2.5  # Dovecot's fixed 500 ms plus the pass; never assert below 500 ms
    recorder.assert_each_once([uid])
    assert running.watcher.sessions == 1
    assert running.watcher.last_pass_at is not None


@needs_dovecot
def test_catch_up_pass_sees_mail_that_arrived_before_the_start(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    start_watcher: StartWatcher,
) -> None:
    uids = [dovecot.append(imap_folder, make_mail()) for _ in range(3)]
    mailbox = make_dovecot_mailbox(imap_folder)
    _running, recorder = start_after_first_pass(start_watcher, mailbox)
    recorder.assert_each_once(uids)
    assert recorder.statuses[0].folder == imap_folder


@needs_dovecot
def test_server_restart_mid_idle_reconnects_and_catches_up_exactly_once(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    dovecot_restart: Callable[[], None],
    start_watcher: StartWatcher,
) -> None:
    before = dovecot.append(imap_folder, make_mail())
    mailbox = make_dovecot_mailbox(imap_folder)
    recorder = PassRecorder(mailbox)
    # back-off long enough that the APPEND below lands before the watcher is back
    running = start_watcher(mailbox, recorder, backoff_initial_s=0.4, backoff_max_s=0.8)
    wait_until(lambda: before in recorder.seen, 5, "the first pass")
    time.sleep(0.2)  # in IDLE now

    dovecot_restart()
    during = dovecot.append(imap_folder, make_mail())
    assert during not in recorder.seen
    wait_until(lambda: during in recorder.seen, 5, "the catch-up after the restart")
    assert running.watcher.sessions == 2

    after = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: after in recorder.seen, 3, "IDLE on the new session")
    recorder.assert_each_once([before, during, after])


@needs_dovecot
def test_mail_delivered_during_an_outage_is_processed_exactly_once(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    make_tcp_proxy: MakeTcpProxy,
    start_watcher: StartWatcher,
) -> None:
    proxy = make_tcp_proxy(dovecot.imaps_port)
    mailbox = make_dovecot_mailbox(imap_folder, port=proxy.port)
    recorder = PassRecorder(mailbox)
    running = start_watcher(mailbox, recorder)
    first = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: first in recorder.seen, 5, "the first mail")

    # the server "goes away" for the watcher only: Dovecot stays up to take deliveries
    proxy.refuse()
    assert proxy.cut(reset=True) == 1
    wait_until(lambda: running.watcher.failures >= 3, 5, "three failed reconnects")
    assert running.watcher.state.startswith("backoff: ")
    during = [dovecot.append(imap_folder, make_mail()) for _ in range(2)]
    time.sleep(0.3)
    assert not set(during) & set(recorder.seen)

    proxy.accept()
    wait_until(lambda: set(during) <= set(recorder.seen), 5, "the catch-up pass")
    later = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: later in recorder.seen, 3, "IDLE after the outage")
    recorder.assert_each_once([first, *during, later])
    assert running.watcher.sessions == 2
    assert proxy.refused >= 3


@needs_dovecot
def test_stalled_connection_is_detected_and_replaced(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    make_tcp_proxy: MakeTcpProxy,
    start_watcher: StartWatcher,
) -> None:
    idle_timeout_s, read_timeout_s = 1.0, 2.0
    proxy = make_tcp_proxy(dovecot.imaps_port)
    mailbox = make_dovecot_mailbox(imap_folder, port=proxy.port, timeout_s=read_timeout_s)
    running, recorder = start_after_first_pass(
        start_watcher, mailbox, idle_timeout_s=idle_timeout_s
    )
    time.sleep(0.3)

    # both directions stop, nothing is closed: only our own timeouts can notice
    stalled_at = time.monotonic()
    assert proxy.stall() == 1
    replaced_s = wait_until(
        lambda: running.watcher.sessions >= 2, idle_timeout_s + read_timeout_s + 2, "a new session"
    )
    assert replaced_s >= read_timeout_s - 0.2  # it really waited for the read timeout
    # no progress was reported while the connection hung: the watchdog would see it
    during = [at for at, _ in running.progress if stalled_at < at < stalled_at + read_timeout_s]
    assert len(during) <= 1, "progress reported during a hang (at most one wait ending)"

    uid = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: uid in recorder.seen, 3, "mail on the replacement session")
    recorder.assert_each_once([uid])


@needs_dovecot
def test_server_that_accepts_but_never_answers_is_retried(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    make_tcp_proxy: MakeTcpProxy,
    start_watcher: StartWatcher,
) -> None:
    proxy = make_tcp_proxy(dovecot.imaps_port)
    proxy.stall(new_connections=True)  # TCP connects, the TLS handshake never completes
    uid = dovecot.append(imap_folder, make_mail())
    mailbox = make_dovecot_mailbox(imap_folder, port=proxy.port, timeout_s=1.0)
    recorder = PassRecorder(mailbox)
    running = start_watcher(mailbox, recorder, backoff_initial_s=0.5, backoff_max_s=0.5)
    wait_until(lambda: running.watcher.state.startswith("backoff: "), 3, "the connect timeout")
    assert "no answer within 1.0s" in running.watcher.state
    assert recorder.passes == 0

    proxy.resume()
    wait_until(lambda: uid in recorder.seen, 5, "recovery")
    recorder.assert_each_once([uid])


@needs_dovecot
@pytest.mark.parametrize("how", ["doveadm kick", "kill -9 imap"])
def test_dropped_session_reconnects(
    how: str,
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    start_watcher: StartWatcher,
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    running, recorder = start_after_first_pass(start_watcher, mailbox, idle_timeout_s=5.0)
    time.sleep(0.2)

    if how == "doveadm kick":
        subprocess.run(
            ["doveadm", "-c", str(dovecot.config_path), "kick", dovecot.user],
            check=True,
            capture_output=True,
            timeout=10,
        )
    else:
        pids = _imap_pids(dovecot)
        assert pids, "the watcher's session is not listed"
        subprocess.run(["kill", "-9", *map(str, pids)], check=True, timeout=10)
    reconnect_s = wait_until(lambda: running.watcher.sessions >= 2, 3, "the reconnect")
    assert reconnect_s < 1.5  # an EOF ends the IDLE at once, not at its renewal 5 s later

    uid = dovecot.append(imap_folder, make_mail())
    wait_until(lambda: uid in recorder.seen, 3, "mail after the reconnect")
    recorder.assert_each_once([uid])


@needs_dovecot
def test_without_idle_polling_at_the_interval_sees_mail(
    dovecot_variant: Callable[..., DovecotServer],
    make_dovecot_mailbox: MakeMailbox,
    start_watcher: StartWatcher,
) -> None:
    server = dovecot_variant(hide=("IDLE",))
    folder = "watch-no-idle"
    server.create_folder(folder)
    try:
        mailbox = make_dovecot_mailbox(folder, server=server)
        running, recorder = start_after_first_pass(
            start_watcher, mailbox, poll_interval_s=0.3, idle_timeout_s=5.0
        )
        assert recorder.statuses[0].has_idle is False

        appended_at = time.monotonic()
        uid = server.append(folder, make_mail())
        wait_until(lambda: uid in recorder.seen, 2, "the poll")
        assert recorder.seen_at[uid] - appended_at < 1.0

        passes = recorder.passes
        time.sleep(1.0)
        assert 2 <= recorder.passes - passes <= 5, "about one pass per 0.3 s"
        running.halt(within_s=1.0)
        recorder.assert_each_once([uid])
    finally:
        server.delete_folder(folder)


@needs_dovecot
def test_wake_runs_a_pass_during_idle(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox, start_watcher: StartWatcher
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    running, recorder = start_after_first_pass(start_watcher, mailbox, idle_timeout_s=30.0)
    time.sleep(0.3)

    running.wake.set()
    took = wait_until(lambda: recorder.passes >= 2, 2, "the pass asked for")
    assert took < 1.0
    assert not running.wake.is_set()


@needs_dovecot
def test_stop_during_idle_returns_within_a_second(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox, start_watcher: StartWatcher
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    running, _recorder = start_after_first_pass(start_watcher, mailbox, idle_timeout_s=30.0)
    time.sleep(0.3)
    assert running.halt() < 1.0
    assert running.watcher.state == "stopped"


@needs_dovecot
def test_stop_during_backoff_returns_within_a_second(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    make_tcp_proxy: MakeTcpProxy,
    start_watcher: StartWatcher,
) -> None:
    proxy = make_tcp_proxy(dovecot.imaps_port)
    proxy.refuse()
    mailbox = make_dovecot_mailbox(imap_folder, port=proxy.port)
    running = start_watcher(
        mailbox, PassRecorder(mailbox), backoff_initial_s=30.0, backoff_max_s=60.0
    )
    wait_until(lambda: running.watcher.state.startswith("backoff: "), 5, "the back-off")
    assert running.halt() < 1.0


@needs_dovecot
def test_idle_is_renewed_every_idle_timeout(
    dovecot: DovecotServer, imap_folder: str, start_watcher: StartWatcher
) -> None:
    waits: list[tuple[float, float]] = []

    class Spy(ImapMailbox):
        def idle_wait(
            self, timeout_s: float, interrupted: Callable[[], bool] | None = None
        ) -> bool:
            waits.append((time.monotonic(), timeout_s))
            return super().idle_wait(timeout_s, interrupted)

    mailbox = Spy(imap_config_for(dovecot, imap_folder), dovecot.password, ca_file=dovecot.ca_file)
    try:
        running = start_watcher(mailbox, PassRecorder(mailbox), idle_timeout_s=0.3)
        time.sleep(1.5)
        running.halt()
    finally:
        mailbox.close()
    assert len(waits) >= 3
    assert all(timeout <= 0.3 for _, timeout in waits)
    gaps = [later - earlier for (earlier, _), (later, _) in pairwise(waits)]
    assert max(gaps) < 0.3 + 0.3, "each IDLE ends with DONE and the next one starts at once"


# ---- back-off and failure containment, with a scripted fake ---------------------------


def test_backoff_delay_doubles_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    floors = []
    for failures in range(1, 16):
        ceiling = min(300.0, 2.0 ** (failures - 1))
        delay = backoff_delay(failures, 1.0, 300.0, rng)
        assert ceiling / 2 <= delay <= ceiling
        floors.append(ceiling / 2)
    assert floors[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    draws = [backoff_delay(3, 1.0, 300.0, rng) for _ in range(200)]
    assert len(set(draws)) == 200, "jittered, not one fixed value"
    assert min(draws) < 2.4 and max(draws) > 3.6, "spread over the upper half of [0, 4]"
    assert backoff_delay(100_000, 1.0, 300.0, rng) <= 300.0  # no overflow after a long outage
    with pytest.raises(ValueError, match="counts from 1"):
        backoff_delay(0, 1.0, 300.0, rng)


STATUS = MailboxStatus("INBOX", 1, 1, True, True, True, True)


class ScriptedMailbox:
    """A fake session: ``open`` and ``idle_wait`` raise what the script says, in order."""

    def __init__(
        self,
        open_failures: list[BaseException] | None = None,
        wait_failures: list[BaseException] | None = None,
        status: MailboxStatus = STATUS,
    ) -> None:
        self.open_failures = list(open_failures or [])
        self.wait_failures = list(wait_failures or [])
        self.status = status
        self.opened_at: list[float] = []
        self.wait_timeouts: list[float] = []
        self.closes = 0

    def open(self) -> MailboxStatus:
        self.opened_at.append(time.monotonic())
        if self.open_failures:
            raise self.open_failures.pop(0)
        return self.status

    def fetch_new(self, after_uid: int, since: date | None = None) -> Iterator[FetchedMail]:
        raise AssertionError("the watcher never reads mail itself")

    def acknowledge(self, key: MailKey, message_id: str | None) -> str:
        raise AssertionError("the watcher never acknowledges mail itself")

    def acknowledge_many(self, mails: Sequence[tuple[MailKey, str | None]]) -> list[str]:
        raise AssertionError("the watcher never acknowledges mail itself")

    def idle_wait(self, timeout_s: float, interrupted: Callable[[], bool] | None = None) -> bool:
        self.wait_timeouts.append(timeout_s)
        if self.wait_failures:
            raise self.wait_failures.pop(0)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not (interrupted and interrupted()):
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self.closes += 1


class CountingPass:
    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = list(failures or [])
        self.at: list[float] = []

    def __call__(self, mailbox: Mailbox, status: MailboxStatus) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.at.append(time.monotonic())


def test_reconnects_back_off_exponentially_then_catch_up(start_watcher: StartWatcher) -> None:
    mailbox = ScriptedMailbox(open_failures=[MailboxError("down")] * 5)
    on_pass = CountingPass()
    running = start_watcher(
        mailbox, on_pass, backoff_initial_s=0.02, backoff_max_s=0.16, rng=random.Random(3)
    )
    wait_until(lambda: len(on_pass.at) >= 1, 5, "the catch-up pass")
    gaps = [b - a for a, b in pairwise(mailbox.opened_at)]
    assert len(gaps) == 5
    for failures, gap in enumerate(gaps, start=1):
        ceiling = min(0.16, 0.02 * 2 ** (failures - 1))
        assert ceiling / 2 - 0.002 <= gap <= ceiling + 0.25, (failures, gaps)
    assert gaps[3] > gaps[0] * 2, "the delays grow"
    assert on_pass.at[0] > mailbox.opened_at[-1], "the pass follows the successful open"
    wait_until(lambda: running.watcher.failures == 0, 3, "a healthy session resets the count")
    assert running.watcher.sessions == 1
    assert mailbox.closes == 5, "every failed session is closed"
    assert any(what == "backoff" for _, what in running.progress)


def test_refused_login_backs_off_too(
    start_watcher: StartWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inbox_poller.service")
    mailbox = ScriptedMailbox(open_failures=[MailboxLoginError("login as 'x' refused")] * 1000)
    running = start_watcher(mailbox, CountingPass(), backoff_initial_s=0.05, backoff_max_s=0.1)
    time.sleep(0.6)
    running.halt()
    # at least 25 ms between attempts (equal jitter): never a hot loop
    assert 3 <= len(mailbox.opened_at) <= 0.6 / 0.025 + 2
    assert "refused" in caplog.text
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert running.watcher.state == "stopped"


def test_unexpected_errors_are_logged_with_traceback_and_never_escape(
    start_watcher: StartWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inbox_poller.service")
    mailbox = ScriptedMailbox(
        open_failures=[ValueError("bug in open")], wait_failures=[KeyError("bug in wait")]
    )
    on_pass = CountingPass(failures=[RuntimeError("bug in the pass")])
    calls: list[str] = []

    def flaky_progress(what: str) -> None:
        calls.append(what)
        if len(calls) == 1:
            raise OSError("watchdog socket gone")

    running = start_watcher(
        mailbox, on_pass, on_progress=flaky_progress, idle_timeout_s=0.05, backoff_max_s=0.05
    )
    wait_until(lambda: len(on_pass.at) >= 2, 5, "passes after every failure")
    running.halt()
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    logged = " ".join(str(r.exc_info[1]) for r in tracebacks if r.exc_info)
    for text in ("bug in open", "bug in wait", "bug in the pass", "watchdog socket gone"):
        assert text in logged
    assert running.watcher.sessions == 3  # open failed once; the pass and a wait failed once


def test_poll_interval_is_the_floor_and_bounds_each_wait(start_watcher: StartWatcher) -> None:
    mailbox = ScriptedMailbox()  # never reports new mail
    on_pass = CountingPass()
    running = start_watcher(mailbox, on_pass, poll_interval_s=0.2, idle_timeout_s=5.0)
    time.sleep(1.1)
    running.halt()
    assert 4 <= len(on_pass.at) <= 7, "one pass at start, then one per 0.2 s"
    assert max(mailbox.wait_timeouts) <= 0.2, "no wait runs past the next poll"
    whats = {what for _, what in running.progress}
    assert {"pass", "idle"} <= whats


def test_wake_without_idle_is_noticed_promptly(start_watcher: StartWatcher) -> None:
    no_idle = MailboxStatus("INBOX", 1, 1, True, True, True, False)
    mailbox = ScriptedMailbox(status=no_idle)
    on_pass = CountingPass()
    running = start_watcher(mailbox, on_pass, idle_timeout_s=30.0)
    wait_until(lambda: len(on_pass.at) == 1, 3, "the first pass")
    running.wake.set()
    assert wait_until(lambda: len(on_pass.at) == 2, 2, "the woken pass") < 0.5
    assert running.halt() < 0.5
    assert all(timeout == 0 for timeout in mailbox.wait_timeouts), "NOOP only, never a sleep"


def test_stop_during_backoff_with_progress_reported(start_watcher: StartWatcher) -> None:
    mailbox = ScriptedMailbox(open_failures=[MailboxError("connection refused")])
    running = start_watcher(mailbox, CountingPass(), backoff_initial_s=30, backoff_max_s=30)
    wait_until(lambda: bool(running.progress), 3, "the back-off")
    assert running.watcher.state == "backoff: connection refused"
    assert [what for _, what in running.progress] == ["backoff"]
    assert running.halt() < 0.5
    assert len(mailbox.opened_at) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("poll_interval_s", 0), ("idle_timeout_s", -1), ("backoff_initial_s", 0)],
)
def test_rejects_non_positive_intervals(option: str, value: float) -> None:
    options: dict[str, Any] = {"poll_interval_s": 1.0, option: value}
    with pytest.raises(ValueError, match=option):
        MailboxWatcher(
            ScriptedMailbox(),
            CountingPass(),
            stop=threading.Event(),
            wake=threading.Event(),
            **options,
        )
