"""The daemon's hook thread, in the real daemon: a hook runs within seconds of its
export's archiving, never holds up the acknowledgement, and a stop leaves it to run again."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState, HookState
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.loop import LoopEnv

pytestmark = pytest.mark.dovecot

WITHIN_S = 5.0
"""How soon after its archiving an export's hook must start."""


def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.timeout(120)
def test_a_slow_hook_runs_at_once_holds_nothing_up_and_survives_a_restart(
    loop_env: LoopEnv, notify: NotifySocket, daemons: list[DaemonProcess]
) -> None:
    env = loop_env
    log = env.root / "hook.log"
    marker = env.root / "slow-once"
    hook = env.root / "hook"
    # the first run is slow (a big load), the one after the restart quick
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "start $(date +%s.%N) $INBOX_POLLER_JOB_ID $INBOX_POLLER_ATTEMPT" >> {log}\n'
        f"[ -e {marker} ] || {{ touch {marker}; sleep 60; }}\n"
        f'echo "end" >> {log}\n'
    )
    hook.chmod(0o755)
    env.write_config()
    text = env.config_path.read_text().replace(
        "timeout_s = 10\n\n[download]", "timeout_s = 5\npoll_interval = 5\n\n[download]"
    )
    env.config_path.write_text(text + f'\n[hooks]\non_archived = ["{hook}"]\ntimeout = "2m"\n')
    daemon = DaemonProcess(env, notify)
    daemons.append(daemon)
    notify.wait_for(lambda m: "READY=1" in m)

    job_id = env.submit()
    ledger = Store(env.root / "state" / "state.db", read_only=True)
    _until(lambda: log.exists())
    started = float(log.read_text().split()[1])
    [line] = env.manifest()
    archived_at = datetime.fromisoformat(line["archived_at"]).timestamp()
    print(f"hook started {started - archived_at:.3f}s after the archive")
    assert 0 <= started - archived_at < WITHIN_S

    # the hook sleeps; the mail is acknowledged anyway
    def acknowledged() -> bool:
        export = ledger.export_by_job_id(job_id)
        return export is not None and export.state is ExportState.ACKNOWLEDGED

    _until(acknowledged)
    assert "end" not in log.read_text()

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert "hook on_archived stopped by shutdown" in daemon.log()
    [run] = ledger.hook_runs()
    assert (run.state, run.attempts) == (HookState.PENDING, 0)  # not the hook's failure

    again = DaemonProcess(env, notify)
    daemons.append(again)
    _until(lambda: log.read_text().endswith("end\n"))
    assert [row.split()[2:] for row in log.read_text().splitlines() if row.startswith("start")] == [
        [job_id, "1"],
        [job_id, "1"],
    ]
    _until(lambda: ledger.hook_runs()[0].state is HookState.DONE)
    status = json.loads(env.cli("status", "--json").stdout)
    assert not [p for p in status["problems"] if "hook" in p]
