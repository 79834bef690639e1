"""The hooks of archived exports over a real ledger and real programs: at least once,
retried with back-off across restarts, and visible while they fail."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.loop.hooks import (
    ON_ARCHIVED,
    HookDispatcher,
    HookSettings,
    retry_delay_s,
)
from inbox_poller.models import (
    ArchivedFile,
    ExportRequest,
    HookState,
    MailKey,
    MailOutcome,
    MailRecord,
)
from inbox_poller.service.health import ledger_health
from tests.plugins.loop import LoopEnv
from tests.plugins.postgres import PgDatabase, postgres_session

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _archived(store: Store, job_id: str, *, hooks: tuple[str, ...] = (ON_ARCHIVED,)) -> int:
    export = store.create_export(ExportRequest("42", "20261101", "20261102"), T0)
    store.mark_submitted(export.export_id, job_id, "raw", T0)
    key = MailKey("INBOX", 7, int(job_id))
    mail = MailRecord(key, None, MailOutcome.MATCHED, "", T0, export.export_id)
    store.record_mail(mail, T0, download_url="https://x.example/f.json")
    store.mark_downloading(export.export_id, T0)
    path = f"M/2026/11/stat-42_job-{job_id}.json"
    store.mark_verified(
        export.export_id, "/p", ArchivedFile(path, 5, "ab" * 32, 1, "array", ""), T0
    )
    line = {"job_id": job_id, "stat": "42", "path": path, "bytes": 5, "export_id": export.export_id}
    store.mark_archived(export.export_id, T0, hooks=hooks, event=json.dumps(line))
    return export.export_id


def _hook(tmp_path: Path, body: str) -> tuple[str, ...]:
    script = tmp_path / "hook"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return (str(script),)


def _dispatcher(
    store: Store, tmp_path: Path, command: tuple[str, ...], clock: Clock
) -> HookDispatcher:
    settings = HookSettings(on_archived=command, timeout_s=10)
    return HookDispatcher(store, tmp_path / "archive", settings, clock=clock)


def test_the_backoff_starts_at_10s_doubles_and_is_capped_at_5_minutes() -> None:
    assert [retry_delay_s(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 300, 300, 300]


def test_a_hook_runs_once_with_the_manifest_line_and_its_variables(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    clock = Clock()
    command = _hook(
        tmp_path,
        f"cat >> {tmp_path}/stdin\n"
        f'echo "$INBOX_POLLER_JOB_ID $INBOX_POLLER_FILE $INBOX_POLLER_ATTEMPT" >> {tmp_path}/env\n',
    )
    export_id = _archived(store, "501")
    hooks = _dispatcher(store, tmp_path, command, clock)
    assert hooks.next_due() == T0
    assert hooks.run_due() == []
    assert hooks.run_due() == []  # done: never again
    [line] = (tmp_path / "stdin").read_text().splitlines()
    assert json.loads(line)["job_id"] == "501"
    assert (tmp_path / "env").read_text() == (
        f"501 {tmp_path}/archive/M/2026/11/stat-42_job-501.json 1\n"
    )
    [run] = store.hook_runs()
    assert (run.export_id, run.state, run.attempts, run.finished_at) == (
        export_id,
        HookState.DONE,
        0,
        T0,
    )
    assert hooks.next_due() is None


def test_the_ledger_is_synced_before_the_first_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a run is queued with "archived", a relaxed commit (reliability.md §6.1)
    store = Store(tmp_path / "state.db")
    clock = Clock()
    _archived(store, "503")
    _archived(store, "504")
    steps: list[str] = []
    sync = store.sync

    def synced() -> None:
        steps.append("sync")
        sync()

    monkeypatch.setattr(store, "sync", synced)
    hooks = _dispatcher(store, tmp_path, _hook(tmp_path, f"echo run >> {tmp_path}/runs\n"), clock)
    assert hooks.run_due() == []
    assert steps == ["sync"]  # once, before the first of the two runs
    assert (tmp_path / "runs").read_text() == "run\nrun\n"
    assert hooks.run_due() == [] and steps == ["sync"]  # nothing due: no sync


def test_an_export_archived_without_hooks_queues_none(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _archived(store, "502", hooks=())
    assert store.hook_runs() == []


def test_a_failing_hook_is_retried_with_backoff_across_restarts_and_shows_in_status(
    tmp_path: Path,
) -> None:
    from inbox_poller.config import load_config
    from tests.samples import MINIMAL

    path = tmp_path / "state.db"
    clock = Clock()
    # fails twice, then works: the count is kept in a file, as a real loader's state would be
    command = _hook(
        tmp_path,
        f"n=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((n+1)) > {tmp_path}/n\n"
        f'[ "$n" -ge 2 ] || {{ echo "database is down" >&2; exit 1; }}\n',
    )
    store = Store(path)
    _archived(store, "503")
    failures = _dispatcher(store, tmp_path, command, clock).run_due()
    assert failures == ["hook on_archived for job 503: exit 1: database is down"]
    [run] = store.pending_hook_runs()
    assert (run.attempts, run.next_at, run.last_error) == (
        1,
        T0 + timedelta(seconds=10),
        "exit 1: database is down",
    )
    config_path = tmp_path / "config.toml"
    config_path.write_text(MINIMAL)
    health = ledger_health(store, load_config(config_path), clock())
    assert (
        "1 hook run(s) failing (job 503: on_archived failed 1 time(s): exit 1: database is down)"
        in health.problems
    )
    store.close()

    # a restart: a new ledger connection and dispatcher; the next try is kept
    store = Store(path)
    hooks = _dispatcher(store, tmp_path, command, clock)
    clock.advance(9)
    assert hooks.run_due() == [] and (tmp_path / "n").read_text() == "1\n"  # not due yet
    clock.advance(2)
    assert len(hooks.run_due()) == 1
    [run] = store.pending_hook_runs()
    assert (run.attempts, run.next_at) == (2, clock.now + timedelta(seconds=20))
    clock.advance(20)
    assert hooks.run_due() == []
    [run] = store.hook_runs()
    assert (run.state, run.attempts, run.last_error) == (
        HookState.DONE,
        2,
        "exit 1: database is down",
    )
    assert (tmp_path / "n").read_text() == "3\n"
    config = load_config(config_path)
    assert not [p for p in ledger_health(store, config, clock()).problems if "hook" in p]


def test_runs_are_made_in_the_order_they_fall_due(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    clock = Clock()
    command = _hook(tmp_path, f'echo "$INBOX_POLLER_JOB_ID" >> {tmp_path}/order\n')
    for job in ("601", "602", "603"):
        _archived(store, job)
    _dispatcher(store, tmp_path, command, clock).run_due()
    assert (tmp_path / "order").read_text().split() == ["601", "602", "603"]


def test_a_hook_no_longer_configured_is_dropped_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "state.db")
    _archived(store, "701")
    assert _dispatcher(store, tmp_path, (), Clock()).run_due() == []
    [run] = store.hook_runs()
    assert run.state is HookState.SKIPPED
    assert run.last_error == "[hooks] on_archived is no longer configured"
    assert "export 1 (job 701): hook on_archived not run: [hooks] on_archived is no longer" in (
        caplog.text
    )


# ---- the whole loop: real Dovecot, the simulator, inbox-poller as a process --------------


def _with_hook(env: LoopEnv, body: str, timeout: str = "30s") -> Path:
    """Configure *env* with an on_archived hook running *body*; return its log file."""
    log = env.root / "hook.log"
    command = _hook(env.root, body.replace("LOG", str(log)))
    env.write_config()
    with env.config_path.open("a", encoding="utf-8") as config:
        config.write(
            f'\n[hooks]\non_archived = {json.dumps(list(command))}\ntimeout = "{timeout}"\n'
        )
    return log


@pytest.mark.dovecot
def test_run_once_runs_the_hook_with_the_manifest_line_after_acknowledging(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    log = _with_hook(env, 'cat >> LOG\necho "$INBOX_POLLER_JOB_ID $INBOX_POLLER_FILE" >> LOG\n')
    job_id = env.submit()
    result = env.cli("run", "--once")
    assert result.returncode == 0, result.stdout + result.stderr
    [line] = (env.archive_dir / "manifest.jsonl").read_text().splitlines()
    [path] = env.archived_files()
    assert log.read_text() == f"{line}\n{job_id} {path}\n"  # the manifest line, byte for byte
    assert "hook on_archived done" in result.stderr
    again = env.cli("run", "--once")
    assert again.returncode == 0
    assert log.read_text() == f"{line}\n{job_id} {path}\n"  # not run again


@pytest.mark.dovecot
def test_a_failing_hook_fails_run_once_but_never_the_archive_or_the_acknowledgement(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    _with_hook(env, 'echo "loader: table locked" >&2\nexit 4\n')
    job_id = env.submit()
    result = env.cli("run", "--once")
    assert result.returncode == 1
    assert f"failed: hook on_archived for job {job_id}: exit 4: loader: table locked" in (
        result.stdout
    )
    assert "archived 1, acknowledged 1" in result.stdout
    exports = json.loads(env.cli("exports", "--json").stdout)
    assert exports[0]["state"] == "acknowledged"
    assert exports[0]["hooks"] == [
        {
            "hook": "on_archived",
            "state": "failing",
            "attempts": 1,
            "next_at": exports[0]["hooks"][0]["next_at"],
            "last_error": "exit 4: loader: table locked",
            "finished_at": None,
        }
    ]
    table = env.cli("exports").stdout
    assert "[hook on_archived failing, 1 tries: exit 4: loader: table locked]" in table
    status = json.loads(env.cli("status", "--json").stdout)
    assert any("hook run(s) failing" in problem for problem in status["problems"])


@pytest.mark.dovecot
def test_a_hook_interrupted_by_a_crash_runs_again(loop_env: LoopEnv) -> None:
    env = loop_env
    # the first run kills inbox-poller itself (its parent) before it can record anything
    log = _with_hook(
        env,
        'echo "run $INBOX_POLLER_ATTEMPT" >> LOG\n'
        f"[ -e {env.root}/crashed ] || {{ touch {env.root}/crashed; kill -9 $PPID; sleep 5; }}\n",
    )
    env.submit()
    crashed = env.cli("run", "--once")
    assert crashed.returncode == -9
    resumed = env.cli("run", "--once")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert log.read_text() == "run 1\nrun 1\n"  # at least once: twice, the crash uncounted
    [run] = Store(env.root / "state" / "state.db").hook_runs()
    assert run.state is HookState.DONE


@pytest.mark.dovecot
def test_a_crash_between_the_manifest_and_the_ledger_still_runs_the_hook_once(
    loop_env: LoopEnv,
) -> None:
    env = loop_env
    log = _with_hook(env, "cat >> LOG\n")
    env.submit()
    crashed = env.cli("run", "--once", crash_at="download:after-manifest")
    assert crashed.returncode != 0
    assert not log.exists()
    assert env.cli("run", "--once").returncode == 0
    assert len(log.read_text().splitlines()) == 1


@pytest.mark.postgres
def test_two_daemons_on_one_postgresql_ledger_run_a_hook_once_and_take_over_a_dead_ones(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    stores = [Store(postgres_session(pg_database)) for _ in range(2)]
    try:
        first_export = _archived(stores[0], "601")
        clock = Clock()
        command = _hook(tmp_path, f"cat > /dev/null\necho $$ >> {tmp_path}/runs\nsleep 1\n")
        daemons = [_dispatcher(store, tmp_path, command, clock) for store in stores]
        # both find the run due at once; the claim lets one of them run it
        with ThreadPoolExecutor(2) as pool:
            failures = list(pool.map(lambda hooks: hooks.run_due(), daemons))
        assert failures == [[], []]
        assert len((tmp_path / "runs").read_text().splitlines()) == 1
        assert [(r.export_id, r.state) for r in stores[1].hook_runs()] == [
            (first_export, HookState.DONE)
        ]

        # a daemon that claimed a run and died: the run is due again once its claim ends
        _archived(stores[0], "602")
        assert stores[0].claim_hook_run(
            stores[0].hook_runs()[-1].export_id, ON_ARCHIVED, T0, T0 + timedelta(seconds=70)
        )
        assert daemons[1].run_due() == []
        assert len((tmp_path / "runs").read_text().splitlines()) == 1
        clock.advance(70)
        assert daemons[1].run_due() == []
        assert len((tmp_path / "runs").read_text().splitlines()) == 2
        assert {r.state for r in stores[1].hook_runs()} == {HookState.DONE}
    finally:
        for store in stores:
            store.close()
