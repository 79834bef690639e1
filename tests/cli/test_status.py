"""``inbox-poller status`` (``commands.cmd_status``): failures count, cron users are judged
as such, and ``--json`` gives absolute UTC times."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from inbox_poller.cli.program import main
from inbox_poller.ledger.keys import LAST_POLL_KEY, LAST_RUN_KEY
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, utc_now
from tests.samples import MINIMAL


def _config(tmp_path: Path, poll_interval: str = "60") -> Path:
    path = tmp_path / "config.toml"
    text = MINIMAL.replace(
        'password_env = "PASSWORD_VAR"\n',
        f'password_env = "PASSWORD_VAR"\npoll_interval = "{poll_interval}"\n',
    )
    path.write_text(text + '\n[state]\npath = "state.db"\n', encoding="utf-8")
    return path


def _status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["-c", str(config), "status", "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_recent_failure_makes_status_unhealthy_with_absolute_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    now = utc_now()
    with Store(tmp_path / "state.db") as store:
        export = store.create_export(ExportRequest("4711"), now - timedelta(minutes=5))
        store.mark_submit_failed(export.export_id, "Invalid stat", now - timedelta(minutes=5))
        store.set_daemon_value(LAST_POLL_KEY, (now - timedelta(seconds=30)).isoformat())
    code, status = _status(config, capsys)
    assert code == 1
    assert status["mode"] == "daemon" and status["running"] is False
    assert status["problems"] == [
        "the daemon is not running",
        "1 export(s) failed in the last 24h (export 1 submit_failed: Invalid stat)",
    ]
    assert status["recent_failures"] == 1
    for key in ("checked_at", "last_poll_at"):
        moment = status[key]
        assert isinstance(moment, str) and moment.endswith("Z") and "T" in moment, key
    assert status["oldest_pending_since"] is None and status["last_run_at"] is None


def test_cron_users_need_no_daemon_but_a_successful_recent_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, poll_interval="1h")
    now = utc_now()
    with Store(tmp_path / "state.db") as store:
        store.set_daemon_value(LAST_POLL_KEY, (now - timedelta(minutes=50)).isoformat())
        run = {"at": (now - timedelta(minutes=50)).isoformat(), "ok": True, "failed": []}
        store.set_daemon_value(LAST_RUN_KEY, json.dumps(run))
    code, status = _status(config, capsys)
    assert (code, status["mode"], status["problems"]) == (0, "once", [])
    assert str(status["last_run_at"]).endswith("Z")
    with Store(tmp_path / "state.db") as store:
        run = {"at": now.isoformat(), "ok": False, "failed": ["mailbox: LOGIN refused"]}
        store.set_daemon_value(LAST_RUN_KEY, json.dumps(run))
    code, status = _status(config, capsys)
    assert code == 1
    assert status["problems"] == [
        f"the last run --once at {status['last_run_at']} failed: mailbox: LOGIN refused"
    ]
    assert main(["-c", str(config), "status"]) == 1
    text = capsys.readouterr().out
    assert "run --once: last run 0s ago (" in text and "daemon:" not in text
