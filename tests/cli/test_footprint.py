"""What each command imports: only what it needs (issue 13; bench/bench_cli_startup.py).

Each command runs as a real process, the way a user starts it, and reports the modules it
had loaded when it ended; timings stay in bench/, these pin which modules load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, utc_now
from tests.samples import MINIMAL

REPO_ROOT = Path(__file__).resolve().parents[2]

_REPORT_MODULES = """\
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "inbox-poller"
runpy.run_module("inbox_poller", run_name="__main__", alter_sys=True)
"""

NETWORK_EDGES = ("imapclient", "requests", "urllib3", "simdjson", "apscheduler")
LOOP_ROOMS = (
    "inbox_poller.sandbox",
    "inbox_poller.loop",
    "inbox_poller.imap",
    "inbox_poller.download",
    "inbox_poller.pinpointe",
    "inbox_poller.oauth",
    "inbox_poller.matching",
)


def _modules_of(tmp_path: Path, *args: str) -> set[str]:
    """Run ``inbox-poller ARGS`` in a child process; return the modules it loaded."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PASSWORD_VAR"] = "unused"
    done = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return set(json.loads(out.read_text(encoding="utf-8")))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL + '\n[state]\npath = "state.db"\n', encoding="utf-8")
    with Store(tmp_path / "state.db") as store:
        store.create_export(ExportRequest("4711"), utc_now())
    return path


def test_help_imports_no_command_no_config_and_no_library(tmp_path: Path) -> None:
    modules = _modules_of(tmp_path, "--help")
    assert "inbox_poller.cli.commands" not in modules
    assert _loaded(modules, ("pydantic", "inbox_poller.config", "sqlite3", "ssl")) == []
    assert _loaded(modules, NETWORK_EDGES + LOOP_ROOMS) == []


@pytest.mark.parametrize("command", ["status", "exports"])
def test_read_only_commands_import_no_network_library_and_no_loop(
    tmp_path: Path, config: Path, command: str
) -> None:
    modules = _modules_of(tmp_path, "-c", str(config), command)
    assert "inbox_poller.cli.commands" in modules  # the command did run
    assert _loaded(modules, NETWORK_EDGES + LOOP_ROOMS) == []
    assert _loaded(modules, ("pydantic",)) == []  # 0.2 s and 15 MiB (tomlschema.py)


def test_the_daemon_builds_its_loop_without_the_sandbox(tmp_path: Path, config: Path) -> None:
    """What ``run`` has imported once its loop and submitter are built: nothing below the
    command line imports the sandbox (the simulator, the throwaway servers), and with a
    password login neither requests nor pydantic (4.3 and 15 MiB, bench/README.md), nor expat
    before an XML payload arrives."""
    code = (
        "import json, sys\n"
        "import inbox_poller.cli.commands, inbox_poller.service.daemon\n"
        "from pathlib import Path\n"
        "from inbox_poller.config import load_config\n"
        "from inbox_poller.wiring import build_loop, build_submitter\n"
        "config = load_config(Path(sys.argv[1]))\n"
        "build_submitter(config, build_loop(config).store)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PASSWORD_VAR": "p", "TOKEN_VAR": "t"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout))
    assert {"inbox_poller.service.daemon", "inbox_poller.loop.poller"} <= modules
    assert _loaded(modules, ("inbox_poller.sandbox",)) == []
    assert "urllib3" in modules  # the API client and the downloader were built
    assert _loaded(modules, ("requests", "pydantic", "defusedxml.expatreader")) == []
