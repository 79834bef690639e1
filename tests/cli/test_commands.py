"""The subcommands in process, over real files: config show, the read-only commands,
an unusable archive directory, check and wait."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inbox_poller.cli import main
from inbox_poller.config import load_config
from inbox_poller.ledger.store import Store
from inbox_poller.models import ArchivedFile, ExportRequest, MailKey, MailOutcome, MailRecord
from inbox_poller.wiring import open_store
from tests.plugins.loop import REPO_ROOT, LoopEnv
from tests.plugins.postgres import PgDatabase
from tests.samples import MINIMAL

pytestmark = pytest.mark.timeout(60)


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL
        + f'\n[state]\npath = "{tmp_path / "state" / "state.db"}"\n'
        + f'\n[archive]\ndir = "{tmp_path / "archive"}"\n'
        + extra,
        encoding="utf-8",
    )
    return path


# ---- config show -------------------------------------------------------------------------


def test_config_show_prints_a_configuration_that_loads_to_the_same_effective_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "token-canary-1")
    monkeypatch.setenv("PASSWORD_VAR", "password-canary-2")
    (tmp_path / "ca.pem").write_text("not checked here")
    path = _config(
        tmp_path,
        '\n[hooks]\non_archived = ["/usr/local/bin/load", "--to", "db \\"x\\""]\n'
        '\n[[export]]\nname = "daily"\nstat = ["1", "2"]\ncron = "0 3 * * *"\n',
    )
    path.write_text(path.read_text().replace("[imap]", '[imap]\nca_file = "ca.pem"'))
    assert main(["config", "show", "-c", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "token-canary-1" not in shown and "password-canary-2" not in shown
    assert "#   pinpointe.usertoken: environment variable TOKEN_VAR" in shown
    assert "#   imap.password: environment variable PASSWORD_VAR" in shown
    assert f'ca_file = "{tmp_path / "ca.pem"}"' in shown  # resolved
    assert "poll_interval = 60.0" in shown  # a default, filled in
    again = tmp_path / "again" / "config.toml"
    again.parent.mkdir()
    again.write_text(shown)
    tomllib.loads(shown)
    assert load_config(again).effective() == load_config(path).effective()

    assert main(["config", "show", "--json", "-c", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["hooks"]["on_archived"] == ["/usr/local/bin/load", "--to", 'db "x"']
    assert data["state"]["path"] == str(tmp_path / "state" / "state.db")
    assert data["export"][0]["stat"] == ["1", "2"]


def test_effective_configuration_redacts_secrets_wherever_they_would_appear(
    tmp_path: Path,
) -> None:
    from inbox_poller.config import _redact

    # the keys that only name where a secret is stay as they are
    config = load_config(_config(tmp_path))
    assert config.effective()["pinpointe"]["usertoken_env"] == "TOKEN_VAR"
    # values that would be secrets themselves (an OAuth client secret, userinfo in a URL)
    assert _redact(
        {
            "oauth": {"client_secret": "s3cret", "client_secret_file": "f", "refresh_token": "t"},
            "api": {"url": "https://user:pw@host.example:8443/a?token=t"},
        }
    ) == {
        "oauth": {
            "client_secret": "<redacted>",
            "client_secret_file": "f",
            "refresh_token": "<redacted>",
        },
        "api": {"url": "https://host.example:8443/a?<redacted>"},
    }


# ---- read-only commands: no ledger is created --------------------------------------------


@pytest.mark.parametrize(
    "argv", [["exports"], ["exports", "--json"], ["status"], ["status", "--json"], ["wait", "1"]]
)
def test_read_only_commands_say_there_is_no_ledger_and_create_none(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    assert main(["-c", str(path), *argv]) == 1
    ledger = tmp_path / "state" / "state.db"
    assert capsys.readouterr().err == (
        f"inbox-poller: no ledger at {ledger} (has the daemon run?)\n"
    )
    assert not (tmp_path / "state").exists()


def test_check_offline_neither_creates_nor_migrates_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "t")
    monkeypatch.setenv("PASSWORD_VAR", "p")
    path = _config(tmp_path)
    assert main(["check", "--offline", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    ledger = tmp_path / "state" / "state.db"
    assert f"ok   ledger: no ledger at {ledger} yet; `run` creates it" in out
    assert not (tmp_path / "state").exists()
    # an old ledger is reported, not migrated behind the daemon's back
    ledger.parent.mkdir()
    Store(ledger).close()
    conn = sqlite3.connect(ledger)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    assert main(["check", "--offline", "-c", str(path)]) == 1
    assert "FAIL ledger: ledger" in capsys.readouterr().out
    conn = sqlite3.connect(ledger)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3


def test_check_warns_about_a_secret_file_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSWORD_VAR", "p")
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o640)
    path = _config(tmp_path)
    path.write_text(
        path.read_text().replace('usertoken_env = "TOKEN_VAR"', 'usertoken_file = "token"')
    )
    assert main(["check", "--offline", "-c", str(path)]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert (
        f"warn pinpointe token: pinpointe.usertoken: the secret file {token} is readable by "
        f"its group (mode 0640): chmod 600 {token}"
    ) in out


# ---- an unusable archive directory: exit 78 with the fix, at the start ------------------


@pytest.mark.parametrize(
    ("archive", "errno_text", "fix"),
    [
        ("{tmp}/a-file", "File exists", "archive.dir is a file: point it at a directory"),
        ("{tmp}/a-file/archive", "Not a directory", "or one of its parents, is a file"),
        ("/proc/inbox-poller-archive", "No such file or directory", "create the directory"),
        ("/sys/inbox-poller-archive", "Operation not permitted", "writable by the user"),
    ],
)
@pytest.mark.parametrize("once", [True, False])
def test_an_unusable_archive_dir_exits_78_at_start_with_the_fix_named(
    tmp_path: Path,
    archive: str,
    errno_text: str,
    fix: str,
    once: bool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "t")
    monkeypatch.setenv("PASSWORD_VAR", "p")
    (tmp_path / "a-file").write_text("")
    path = _config(tmp_path)
    path.write_text(
        path.read_text().replace(str(tmp_path / "archive"), archive.format(tmp=tmp_path))
    )
    assert main(["run", *(["--once"] if once else []), "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"inbox-poller: configuration error: {path}: archive.dir: ")
    assert errno_text in err, err
    assert fix in err.split("; fix: ")[1]
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "state").exists()  # refused before the ledger or the lock
    assert main(["check", "--offline", "-c", str(path)]) == 1
    assert f"FAIL archive: archive directory {archive.format(tmp=tmp_path)}" in (
        capsys.readouterr().out
    )


# ---- wait ----------------------------------------------------------------------------------

NOW = datetime.now(UTC)
ARCHIVED = ArchivedFile("M/2026/11/stat-42_job-{job}.json", 10, "ab" * 32, 3, "array", "https://x/")


def _submitted(store: Store, job_id: str, *, at: datetime = NOW) -> int:
    export = store.create_export(ExportRequest("42", "20261101", "20261102"), at)
    store.mark_submitted(export.export_id, job_id, "raw", at)
    return export.export_id


def _archive(store: Store, export_id: int, job_id: str) -> None:
    mail = MailRecord(
        MailKey("INBOX", 7, export_id), None, MailOutcome.MATCHED, "why", NOW, export_id
    )
    store.record_mail(mail, NOW, download_url="https://x.example/f.json")
    store.mark_downloading(export_id, NOW)
    archived = ArchivedFile(**{**ARCHIVED.__dict__, "path": ARCHIVED.path.format(job=job_id)})
    store.mark_verified(export_id, "/nowhere.part", archived, NOW)
    store.mark_archived(export_id, NOW)


def test_wait_prints_the_archived_path_once_the_export_is_archived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    store = Store(tmp_path / "state" / "state.db")
    export_id = _submitted(store, "777")
    later = threading.Timer(0.5, _archive, (store, export_id, "777"))
    later.start()
    started = time.monotonic()
    assert main(["wait", "777", "--interval", "0.1", "--timeout", "20", "-c", str(path)]) == 0
    later.join()
    assert time.monotonic() - started < 5
    out, err = capsys.readouterr()
    assert out == f"{tmp_path / 'archive' / 'M/2026/11/stat-42_job-777.json'}\n"
    assert "the daemon is not running" in err


def test_wait_follows_a_resubmission_to_the_export_that_is_archived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    store = Store(tmp_path / "state" / "state.db")
    first = _submitted(store, "801")
    store.mark_failed(first, "Pinpointe reports the job as 'failed'", NOW)
    replacement = store.create_export(
        ExportRequest("42", "20261101", "20261102"), NOW, replaces=store.get_export(first)
    )
    store.mark_submitted(replacement.export_id, "802", "raw", NOW)
    _archive(store, replacement.export_id, "802")
    assert main(["wait", "801", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("stat-42_job-802.json")
    assert "job 801 failed (Pinpointe reports the job as 'failed'); following its" in err


def test_wait_gives_up_on_an_export_that_failed_for_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    store = Store(tmp_path / "state" / "state.db")
    long_ago = NOW - timedelta(minutes=5)
    export_id = _submitted(store, "901", at=long_ago)
    store.mark_failed(export_id, "payload is not JSON", long_ago)
    assert main(["wait", "901", "--timeout", "30", "-c", str(path)]) == 1
    assert "inbox-poller: job 901 failed: payload is not JSON" in capsys.readouterr().err


def test_wait_times_out_with_124_while_the_export_is_under_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    store = Store(tmp_path / "state" / "state.db")
    long_ago = NOW - timedelta(minutes=5)
    export_id = _submitted(store, "951", at=long_ago)
    # an expired link is asked for again later (max_resubmits = 2): still under way
    store.record_mail(
        MailRecord(MailKey("INBOX", 7, 1), None, MailOutcome.MATCHED, "why", NOW, export_id),
        long_ago,
        download_url="https://x.example/f.json",
    )
    store.mark_downloading(export_id, long_ago)
    store.mark_link_expired(export_id, "the download link answered HTTP 410", long_ago)
    started = time.monotonic()
    argv = ["wait", "951", "--timeout", "0.6", "--interval", "0.1", "-c", str(path)]
    assert main(argv) == 124
    assert 0.5 < time.monotonic() - started < 5
    assert "timed out: job 951 is still link_expired" in capsys.readouterr().err
    assert main(["wait", "404", "-c", str(path)]) == 1
    assert "no export with job ID 404" in capsys.readouterr().err


@pytest.mark.dovecot
def test_wait_returns_the_file_run_once_archives(loop_env: LoopEnv) -> None:
    job_id = loop_env.submit()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    argv = ["wait", job_id, "--timeout", "60", "--interval", "0.2"]
    waiter = subprocess.Popen(
        [sys.executable, "-m", "inbox_poller", *argv, "-c", str(loop_env.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting: nothing has read the mail yet
        assert loop_env.cli("run", "--once").returncode == 0
        out, _ = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
    assert waiter.returncode == 0
    [archived] = loop_env.archived_files()
    assert out == f"{archived}\n"


def test_check_fails_a_hook_program_that_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "t")
    monkeypatch.setenv("PASSWORD_VAR", "p")
    program = tmp_path / "load-export"
    path = _config(tmp_path, f'\n[hooks]\non_archived = ["{program}", "--fast"]\n')
    assert main(["check", "--offline", "-c", str(path)]) == 1
    assert f"FAIL hook on_archived: {program}: no such file" in capsys.readouterr().out
    program.write_text("#!/bin/sh\n")
    assert main(["check", "--offline", "-c", str(path)]) == 1
    assert f"not executable (chmod +x {program})" in capsys.readouterr().out
    program.chmod(0o755)
    assert main(["check", "--offline", "-c", str(path)]) == 0
    assert f"ok   hook on_archived: {program} is executable" in capsys.readouterr().out


# ---- [state] url: a PostgreSQL ledger (issue 14) -------------------------------------------


@pytest.mark.postgres
def test_commands_read_a_postgresql_ledger(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    pg_database: PgDatabase,
) -> None:
    monkeypatch.setenv("TOKEN_VAR", "t")
    monkeypatch.setenv("PASSWORD_VAR", "p")
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL
        + f'\n[state]\nurl = "{pg_database.url}"\npassword_file = "{pg_database.password_file}"\n'
        + f'\n[archive]\ndir = "{tmp_path / "archive"}"\n',
        encoding="utf-8",
    )
    assert main(["exports", "--json", "-c", str(path)]) == 1
    assert "has no tables yet: start the daemon" in capsys.readouterr().err
    config = load_config(path)
    with open_store(config) as store:  # as `run` opens it
        store.create_export(ExportRequest("42"), datetime.now(UTC))
    assert main(["exports", "--json", "-c", str(path)]) == 0
    exports = json.loads(capsys.readouterr().out)
    assert [e["state"] for e in exports] == ["submitting"]
    assert main(["check", "--offline", "-c", str(path)]) == 0
    assert f"ok   ledger: {pg_database.url} (1 submitting)" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()
