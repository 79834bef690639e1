"""The rules between rooms (docs/architecture.md) hold, and their check can fail.

``lint-imports`` reads the contracts in pyproject.toml. Each case below plants one
violation in a copy of the package and expects the contract that forbids it to break,
so a contract that silently checks nothing would fail here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports with the repository's contracts on the package under *package_parent*."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_every_contract() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "0 broken" in result.stdout


ROOMS = frozenset(
    f"inbox_poller.{path.stem}"
    for path in (REPO_ROOT / "inbox_poller").iterdir()
    if (path.suffix == ".py" and path.stem not in ("__init__", "__main__"))
    or (path.is_dir() and (path / "__init__.py").exists())
)
"""Every top-level module and package of inbox_poller: each must be placed on a floor."""

ALLOWED = {
    "faces": {"inbox_poller.cli", "inbox_poller.sandbox"},
    "imapclient": {"inbox_poller.imap", "inbox_poller.sandbox"},
    "requests": {"inbox_poller.oauth"},
    "urllib3": {"inbox_poller.download", "inbox_poller.pinpointe"},
    "apscheduler": {"inbox_poller.service", "inbox_poller.schedules"},
    "token-libraries": {"inbox_poller.oauth"},
    "prometheus_client": {"inbox_poller.metrics"},
    "subprocess": {"inbox_poller.hooks", "inbox_poller.loop", "inbox_poller.sandbox"},
    "psycopg": {"inbox_poller.ledger", "inbox_poller.sandbox"},
    "boto3": {"inbox_poller.archive", "inbox_poller.sandbox"},
}
"""For each "only in" contract, the rooms it exempts; every other room is its source."""


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return {c["id"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_every_room_stands_on_exactly_one_floor() -> None:
    placed = [
        module.strip()
        for layer in _contracts()["floors"]["layers"]
        for module in layer.replace("|", ":").split(":")
    ]
    assert sorted(placed) == sorted(ROOMS), "a new room must be given a floor in pyproject.toml"


@pytest.mark.parametrize("contract_id", sorted(ALLOWED))
def test_each_only_in_contract_covers_every_other_room(contract_id: str) -> None:
    # a room missing from a forbidden contract's sources would escape it unnoticed
    sources = set(_contracts()[contract_id]["source_modules"])
    assert sources == ROOMS - ALLOWED[contract_id]


PLANTED = [
    # (module that gets the import, the import line, the contract that must break)
    ("models.py", "import inbox_poller.loop.poller", "Each room imports only from"),
    ("download/fetcher.py", "import inbox_poller.archive", "No edge imports another edge"),
    ("matching/extract.py", "import sqlite3", "The pure core imports no I/O library"),
    ("wiring.py", "import inbox_poller.cli.commands", "Nothing below the faces imports"),
    ("loop/reader.py", "import requests", "requests is used in oauth/ only"),
    ("pinpointe/envelope.py", "import requests", "requests is used in oauth/ only"),
    ("imap/session.py", "import inbox_poller.oauth.tokens", "No edge imports another edge"),
    ("wiring.py", "import msal", "msal, google-auth and authlib are used in oauth/ only"),
    ("ledger/store.py", "import subprocess", "Programs are started in hooks/ only"),
    ("hooks/process.py", "import inbox_poller.ledger.store", "No edge imports another edge"),
    ("ledger/schema.py", "import inbox_poller.ledger.store", "No import circle"),
    ("loop/poller.py", "import prometheus_client", "prometheus_client is used in metrics/"),
    ("service/daemon.py", "import inbox_poller.metrics.registry", "The loop and the daemon"),
    ("loop/poller.py", "import psycopg", "psycopg is used in ledger/ only"),
    ("wiring.py", "import botocore.config", "boto3 and botocore are used in the archive"),
]


@pytest.mark.parametrize(("module", "line", "contract"), PLANTED)
def test_a_planted_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    copy = tmp_path / "inbox_poller"
    shutil.copytree(REPO_ROOT / "inbox_poller", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    # after the module's own imports, as a reviewer might let one slip in
    text = target.read_text(encoding="utf-8")
    target.write_text(
        text.replace(
            "from __future__ import annotations\n",
            f"from __future__ import annotations\n{line}  # noqa\n",
            1,
        ),
        encoding="utf-8",
    )
    assert line in target.read_text(encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert any(row.startswith(contract) for row in broken), result.stdout
