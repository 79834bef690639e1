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
from pathlib import Path

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


PLANTED = [
    # (module that gets the import, the import line, the contract that must break)
    ("models.py", "import inbox_poller.loop.poller", "Each room imports only from"),
    ("download/fetcher.py", "import inbox_poller.archive", "No edge imports another edge"),
    ("matching/extract.py", "import sqlite3", "The pure core imports no I/O library"),
    ("wiring.py", "import inbox_poller.cli.commands", "Nothing below the faces imports"),
    ("loop/reader.py", "import requests", "requests is used in pinpointe/ only"),
    ("ledger/schema.py", "import inbox_poller.ledger.store", "No import circle"),
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
