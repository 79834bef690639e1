"""A daemon on a PostgreSQL ledger across the server's restart and outage (issue 14).

A real ``inbox-poller run`` process with real Dovecot, the simulator and the session's
PostgreSQL: notifications archived before, during and after a restart and a stop of
the server are each archived once, and every mail is acknowledged; the outage is a
back-off with one clear line per try, never a traceback, a failed export or an exit.
``run --once`` during an outage exits with ``EX_TEMPFAIL`` (75) and says why.
"""

from __future__ import annotations

import time

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState
from inbox_poller.sandbox.postgres.server import PostgresServer
from inbox_poller.sandbox.simulator.jobs import Faults
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.loop import LoopEnv
from tests.plugins.postgres import PgDatabase, postgres_session

pytestmark = [pytest.mark.dovecot, pytest.mark.postgres, pytest.mark.timeout(180)]


def _on_postgres(env: LoopEnv, database: PgDatabase) -> None:
    env.write_config()
    text = env.config_path.read_text(encoding="utf-8")
    text = text.replace(
        '[state]\npath = "state/state.db"\n',
        f"[state]\n{database.state_keys()}\n",
    )
    text = text.replace(
        "timeout_s = 10\n\n[download]", "timeout_s = 5\npoll_interval = 5\n\n[download]"
    )
    env.config_path.write_text(text, encoding="utf-8")


def _states(database: PgDatabase) -> dict[str, ExportState]:
    with Store(postgres_session(database, read_only=True)) as store:
        return {e.job_id or "": e.state for e in store.list_exports()}


def _wait_all(database: PgDatabase, job_ids: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    states: dict[str, ExportState] = {}
    while time.monotonic() < deadline:
        states = _states(database)
        if all(states.get(job) is ExportState.ACKNOWLEDGED for job in job_ids):
            return
        time.sleep(0.2)
    raise AssertionError(f"not all acknowledged: {states}")


def test_a_daemon_archives_once_across_a_postgresql_restart_and_outage(
    loop_env: LoopEnv,
    pg_database: PgDatabase,
    postgres: PostgresServer,
    notify: NotifySocket,
    daemons: list[DaemonProcess],
) -> None:
    env = loop_env
    _on_postgres(env, pg_database)
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)

    before = env.submit()
    _wait_all(pg_database, [before])

    # a restart while a download is in flight: its next transaction reconnects
    env.sim.faults_for_next_job(Faults(stall_first=1, stall_at=10, stall_s=3.0))
    in_flight = env.submit()
    postgres.restart()

    # an outage while a notification arrives: the pass backs off until the server is back
    env.sim.notify_delay_s = 1.0
    result = env.cli("submit", "--stat", "4242", "--start", "20261101", "--end", "20261102")
    assert result.returncode == 0, result.stderr
    during = result.stdout.strip()
    postgres.stop()
    try:
        env.sim.job(during).wait_delivered(30)
        time.sleep(4)  # the daemon sees the mail and cannot record it
        assert daemon.process.poll() is None, daemon.log()
    finally:
        postgres.start()
    env.sim.notify_delay_s = 0.0

    after = env.submit()
    jobs = [before, in_flight, during, after]
    try:
        _wait_all(pg_database, jobs)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.log()}") from None

    log = daemon.log()
    # the outage is seen by whichever part touches the ledger first: the watcher's pass,
    # or the mailbox lock's connection (then the watcher is stopped and started again)
    assert (
        "mailbox watcher: the ledger is unavailable: " in log
        or "the connection holding the mailbox lock is lost" in log
    ), log
    assert "ledger: reconnected to " in log
    assert "Traceback" not in log
    assert daemon.process.poll() is None
    manifest = env.manifest()
    assert sorted(line["job_id"] for line in manifest) == sorted(jobs)
    assert len(env.archived_files()) == len(jobs)
    assert env.part_files() == []
    with Store(postgres_session(pg_database, read_only=True)) as store:
        for export in store.list_exports():
            to_states = [to for _, _, to, _ in store.history(export.export_id)]
            assert to_states.count("archived") == 1, (export.job_id, to_states)
            assert export.attempts >= 1
    assert env.messages() == {}  # every mail acknowledged: moved to the processed folder
    assert len(env.messages(env.processed)) == len(jobs)


def test_run_once_during_an_outage_exits_75_and_says_why(
    loop_env: LoopEnv, pg_database: PgDatabase, postgres: PostgresServer
) -> None:
    env = loop_env
    _on_postgres(env, pg_database)
    job_id = env.submit()
    postgres.stop()
    try:
        started = time.monotonic()
        result = env.cli("run", "--once")
        elapsed = time.monotonic() - started
    finally:
        postgres.start()
    assert result.returncode == 75, result.stderr
    assert "the ledger is unavailable; try again later" in result.stderr
    assert pg_database.url in result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30
    again = env.cli("run", "--once")
    assert again.returncode == 0, again.stderr
    assert _states(pg_database)[job_id] is ExportState.ACKNOWLEDGED
