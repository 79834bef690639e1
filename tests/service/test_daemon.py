"""The long-running daemon as a real process, watched through a NOTIFY_SOCKET the test owns.

The process and the socket are ``tests.plugins.daemon``'s.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.loop.budget import READ_TIME_LIMIT_S, TARGET_ENV
from inbox_poller.models import ExportState, MailKey
from inbox_poller.sandbox.simulator.jobs import Faults
from tests.loop.budget_targets import costly
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.dovecot import make_mail
from tests.plugins.loop import LoopEnv
from tests.plugins.promtool import parse, scrape, value
from tests.plugins.tcp_proxy import MakeTcpProxy

pytestmark = pytest.mark.dovecot


def _state(env: LoopEnv, job_id: str) -> ExportState | None:
    export = Store(env.root / "state" / "state.db").export_by_job_id(job_id)
    return export.state if export else None


def _wait_state(env: LoopEnv, job_id: str, wanted: ExportState, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _state(env, job_id) is wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} is {_state(env, job_id)}, not {wanted}")


def _fast_config(env: LoopEnv, extra: str = "") -> None:
    env.write_config()
    text = env.config_path.read_text(encoding="utf-8")
    text = text.replace(
        "timeout_s = 10\n\n[download]", "timeout_s = 5\npoll_interval = 5\n\n[download]"
    )
    env.config_path.write_text(text + extra, encoding="utf-8")


def _ready_daemon(
    env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> DaemonProcess:
    _fast_config(env)
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)
    return daemon


WATCHDOG_S = 2.0
"""``DaemonProcess`` runs the daemon with ``WATCHDOG_USEC=2000000``, as WatchdogSec=2s does."""


def _gaps(pings: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(pings)]


def test_a_two_second_watchdog_is_fed_at_least_every_half_interval(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    daemon = _ready_daemon(env, notify, daemons)
    ready_at = time.monotonic()
    listener = threading.Thread(target=notify.listen, args=(20.0,))
    listener.start()
    # idle, then a pass with mail, a download and an acknowledgement, then idle again
    time.sleep(5)
    job_id = env.submit()
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    listener.join()
    pings = notify.pings_since(ready_at)
    gaps = _gaps(pings)
    assert len(pings) >= 20, pings
    # sd_watchdog_enabled(3): ping at least every half of WATCHDOG_USEC; systemd itself
    # would kill at 2 s, so 1.5 s leaves room for a busy test machine
    assert max(gaps) < 0.75 * WATCHDOG_S, gaps
    assert sorted(gaps)[len(gaps) // 2] <= WATCHDOG_S / 2, gaps
    assert daemon.process.poll() is None


def test_an_idle_daemon_logs_nothing(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    daemon = _ready_daemon(loop_env, notify, daemons)
    notify.wait_for(lambda m: m.startswith("STATUS="))
    before = daemon.log()
    # two scheduled polls (every 5 s here), a STATUS= refresh and APScheduler's runs of them
    time.sleep(12)
    assert daemon.log() == before
    assert daemon.process.poll() is None


def test_a_hung_mailbox_session_stops_the_watchdog_pings(
    loop_env: LoopEnv,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
    make_tcp_proxy: MakeTcpProxy,
) -> None:
    env = loop_env
    proxy = make_tcp_proxy(env.dovecot.imaps_port)
    _fast_config(env)  # imap.timeout_s = 5: a silent server is given up after 5 s
    text = env.config_path.read_text(encoding="utf-8")
    env.config_path.write_text(
        text.replace(f"port = {env.dovecot.imaps_port}", f"port = {proxy.port}"), encoding="utf-8"
    )
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)
    notify.listen(3.0)
    # the session hangs: both directions stop, nothing is closed
    stalled_at = time.monotonic()
    assert proxy.stall() == 1
    notify.listen(8.0)
    pings = notify.pings_since(stalled_at - 1.0)
    assert max(_gaps(pings)) > WATCHDOG_S, pings  # systemd would restart the service


def test_a_mail_that_takes_the_whole_read_budget_is_refused_without_a_restart(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    """Issue 9, finding 1: the reader waits for its worker in slices and feeds the watchdog,
    so a mail that takes the whole budget is refused, not retried forever after a restart."""
    env = loop_env
    env.dovecot.append(env.folder, costly("sleep"))  # read first, at the catch-up pass
    _fast_config(env)
    target = {TARGET_ENV: "tests.loop.budget_targets:read"}
    daemon = DaemonProcess(env, notify, extra_env=target)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)
    ready_at = time.monotonic()
    listener = threading.Thread(target=notify.listen, args=(READ_TIME_LIMIT_S + 4,))
    listener.start()
    job_id = env.submit()  # its notification lands after the costly mail
    listener.join()
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    gaps = _gaps(notify.pings_since(ready_at))
    assert max(gaps) < 0.75 * WATCHDOG_S, gaps  # systemd would not have restarted it
    stopped = f"too costly to read: reading took more than {READ_TIME_LIMIT_S:g} s (stopped)"
    assert daemon.log().count(stopped) == 1
    assert daemon.process.poll() is None


def test_notify_sequence_and_the_loop_running_on_its_own(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    daemon = _ready_daemon(env, notify, daemons)
    notify.wait_for(lambda m: m.startswith("STATUS="))
    notify.wait_for(lambda m: m == "WATCHDOG=1")

    # submitted by hand; the daemon receives, downloads, archives and acknowledges by itself
    job_id = env.submit()
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    [line] = env.manifest()
    assert line["sha256"] == env.sim.job(job_id).sha256

    healthy = env.cli("status")
    assert healthy.returncode == 0, healthy.stdout
    assert "0 pending exports; last poll" in healthy.stdout
    assert "daemon: running" in healthy.stdout
    assert "acknowledged    1" in healthy.stdout

    # a second daemon on the same state refuses to start
    second = DaemonProcess(env, None)
    daemons.append(second)
    assert second.wait(30) != 0
    assert "already running" in second.log()

    # SIGHUP: RELOADING=1 with MONOTONIC_USEC in one datagram, then READY=1
    notify.drain()
    notify.messages.clear()
    daemon.signal(signal.SIGHUP)
    reloading = notify.wait_for(lambda m: "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reloading
    notify.wait_for(lambda m: "READY=1" in m)

    # an invalid new config keeps the old one and logs one error
    good = env.config_path.read_text(encoding="utf-8")
    env.config_path.write_text(good.replace("poll_interval = 5", "poll_interval = 'x'"))
    notify.messages.clear()  # wait_for looks at every message kept: not the last READY=1
    daemon.signal(signal.SIGHUP)
    notify.wait_for(lambda m: "READY=1" in m and "RELOADING" not in m)
    time.sleep(0.5)
    assert daemon.log().count("reload refused") == 1
    env.config_path.write_text(good)

    # the reloaded daemon still works
    job_id = env.submit(stat="4343")
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)

    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert time.monotonic() - started < 10
    notify.wait_for(lambda m: "STOPPING=1" in m)
    stopped = env.cli("status")
    assert stopped.returncode == 1
    assert "problem: the daemon is not running" in stopped.stdout


def test_bad_config_exits_78_before_ready(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    env.config_path.write_text("[imap]\nport = 'x'\n", encoding="utf-8")
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    assert daemon.wait(30) == 78
    assert not any("READY=1" in m for m in notify.drain())


def test_scheduled_export_runs_on_its_own_and_only_once(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    _fast_config(
        env,
        '\n[[export]]\nname = "daily"\nstat = "5151"\nevery = "1d"\nwindow = "previous-day"\n',
    )
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)
    deadline = time.monotonic() + 20
    while not env.sim.jobs and time.monotonic() < deadline:
        time.sleep(0.1)
    [job_id] = env.sim.jobs
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0

    again = DaemonProcess(env, None)  # a restart the same day submits nothing new
    daemons.append(again)
    time.sleep(3)
    again.signal(signal.SIGTERM)
    assert again.wait(10) == 0
    assert list(env.sim.jobs) == [job_id]


def test_sigterm_during_a_large_download_parks_it_and_the_next_start_finishes(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    _fast_config(env)
    env.sim.faults_for_next_job(Faults(stall_first=1, stall_at=100_000, stall_s=60))
    env.sim.payload_records = 20_000
    job_id = env.submit()
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    _wait_state(env, job_id, ExportState.DOWNLOADING)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert time.monotonic() - started < 10
    export = Store(env.root / "state" / "state.db").export_by_job_id(job_id)
    assert export is not None
    assert export.state is ExportState.NOTIFIED
    assert export.attempts == 0  # a shutdown is not a failed attempt
    assert env.archived_files() == []

    again = DaemonProcess(env, None)
    daemons.append(again)
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    again.signal(signal.SIGTERM)
    assert again.wait(10) == 0
    [path] = env.archived_files()
    assert env.part_files() == []
    assert env.manifest()[0]["sha256"] == env.sim.job(job_id).sha256
    assert path.exists()


def test_imap_server_restart_loses_and_duplicates_nothing(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    daemon = _ready_daemon(env, notify, daemons)
    first = env.submit()
    _wait_state(env, first, ExportState.ACKNOWLEDGED)

    env.sim.send_notifications = False
    result = env.cli("submit", "--stat", "4343")
    assert result.returncode == 0, result.stderr
    second = result.stdout.strip()
    env.sim.job(second).wait_ready(30)
    # the server goes away under the daemon's IDLE; the mail arrives right after it is
    # back, before the daemon has reconnected (its back-off starts at one second)
    env.dovecot.stop()
    time.sleep(0.5)
    env.dovecot.start()
    env.sim.deliver_notification(second)
    _wait_state(env, second, ExportState.ACKNOWLEDGED, timeout_s=30)
    assert sorted(line["job_id"] for line in env.manifest()) == sorted([first, second])
    assert len(env.archived_files()) == 2
    assert len(env.messages(env.processed)) == 2
    assert len(env.sim.job(second).requests) == 1  # downloaded once
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert "reconnect" in daemon.log().lower() or "backoff" in daemon.log().lower()


OLD_MAILS = 3000


def test_first_start_on_a_full_mailbox_reads_only_the_new_mail(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    """Submit, deliver, then start the daemon for the first time on a folder that already
    holds thousands of mails from a month before: the old mail is skipped by the server
    (SEARCH SINCE), never fetched or recorded; the notification is archived once
    (docs/reliability.md §2.9)."""
    env = loop_env
    month_ago = datetime.now(UTC) - timedelta(days=30)
    with env.dovecot.client() as client:
        for first in range(0, OLD_MAILS, 500):
            client.multiappend(
                env.folder,
                [
                    {
                        "msg": make_mail(
                            f"news {n}", "Hello.\n", message_id=f"<old-{n}@example.org>"
                        ),
                        "date": month_ago,
                    }
                    for n in range(first, min(first + 500, OLD_MAILS))
                ],
            )
    job_id = env.submit()  # the simulator delivers its notification now
    daemon = _ready_daemon(env, notify, daemons)
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0

    store = Store(env.root / "state" / "state.db")
    try:
        export = store.export_by_job_id(job_id)
        assert export is not None and export.mail is not None
        assert export.mail.uid == OLD_MAILS + 1
        # not one old mail was read: only the notification is recorded
        assert all(
            store.get_mail(MailKey(export.mail.mailbox, export.mail.uidvalidity, uid)) is None
            for uid in range(1, OLD_MAILS + 1)
        )
        assert store.watermark(export.mail.mailbox, export.mail.uidvalidity) == OLD_MAILS + 1
    finally:
        store.close()
    assert [line["job_id"] for line in env.manifest()] == [job_id]
    assert len(env.archived_files()) == 1
    assert len(env.messages()) == OLD_MAILS  # the old mail is left alone
    assert len(env.messages(env.processed)) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_the_daemon_serves_metrics_and_writes_its_textfile_without_a_log_line(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    port = _free_port()
    textfile = env.root / "node" / "inbox_poller.prom"
    textfile.parent.mkdir()
    url = f"http://127.0.0.1:{port}/metrics"
    _fast_config(
        env,
        f'\n[metrics]\nlisten = "{port}"\ntextfile = "node/inbox_poller.prom"\n'
        'labels = { account = "test" }\n',
    )
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)
    notify.wait_for(lambda m: m.startswith("STATUS="))
    _until(textfile.exists)
    account = {"account": "test"}
    _, samples = parse(scrape(url))
    assert value(samples, "inbox_poller_up", account) == 1

    # idle and scraped every second: still not one log line (docs/metrics.md)
    before = daemon.log()
    for _ in range(12):
        scrape(url)
        time.sleep(1)
    assert daemon.log() == before

    job_id = env.submit()
    _wait_state(env, job_id, ExportState.ACKNOWLEDGED)
    [line] = env.manifest()
    method = {"method": line["method"], **account}

    def refreshed() -> bool:
        _, now = parse(scrape(url))
        return value(now, "inbox_poller_exports", {"state": "acknowledged", **account}) == 1

    _until(refreshed)  # the gauges follow the ledger every 10 s
    _, samples = parse(scrape(url))
    assert value(samples, "inbox_poller_archived_exports_total", method) == 1
    assert value(samples, "inbox_poller_archived_bytes_total", method) == line["bytes"]
    assert value(samples, "inbox_poller_download_duration_seconds_count", account) == 1
    assert value(samples, "inbox_poller_submit_to_archive_seconds_count", account) == 1
    assert value(samples, "inbox_poller_last_mailbox_pass_timestamp_seconds", account) > 0
    assert value(samples, "inbox_poller_healthy", account) == 1
    _, written = parse(textfile.read_text(encoding="utf-8"))
    assert value(written, "inbox_poller_archived_exports_total", method) == 1

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    _, written = parse(textfile.read_text(encoding="utf-8"))
    assert value(written, "inbox_poller_up", account) == 0
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # the listener is gone
