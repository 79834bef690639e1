"""Which halves ``migrate`` moves, decided from the source and target configurations."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_poller.config import Config, load_config
from inbox_poller.errors import UsageError
from inbox_poller.migration.plan import plan
from tests.samples import MINIMAL

PG = '[state]\nurl = "postgresql://inbox@127.0.0.1/ledger"\n'
S3 = '[archive]\nurl = "s3://bucket/p"\n'
LOCAL = '[state]\npath = "state.db"\n[archive]\ndir = "archive"\n'


def _config(tmp_path: Path, name: str, *sections: str) -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(MINIMAL + "\n" + "\n".join(sections), encoding="utf-8")
    return load_config(path)


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN_VAR", "t")
    monkeypatch.setenv("PASSWORD_VAR", "p")


def test_each_half_moves_when_the_two_files_differ(tmp_path: Path) -> None:
    source = _config(tmp_path, "source", LOCAL)
    both = plan(source, _config(tmp_path, "both", PG, S3), ledger_only=False, archive_only=False)
    assert (both.ledger, both.archive) == (True, True)
    assert both.source_ledger == tmp_path / "state.db"
    assert both.source_archive == tmp_path / "archive"
    assert (both.target_url, both.target_archive) == (
        "postgresql://inbox@127.0.0.1/ledger",
        "s3://bucket/p",
    )
    ledger = plan(source, _config(tmp_path, "ledger", PG), ledger_only=False, archive_only=False)
    assert (ledger.ledger, ledger.archive) == (True, False)
    archive = plan(source, _config(tmp_path, "archive", S3), ledger_only=False, archive_only=False)
    assert (archive.ledger, archive.archive) == (False, True)
    narrowed = plan(source, _config(tmp_path, "n", PG, S3), ledger_only=False, archive_only=True)
    assert (narrowed.ledger, narrowed.archive) == (False, True)


@pytest.mark.parametrize(
    ("source", "target", "flags", "message"),
    [
        ((LOCAL,), (LOCAL,), {}, "nothing to migrate: .*target.toml keeps the ledger"),
        ((PG,), (PG,), {"ledger_only": True}, "the source ledger is already PostgreSQL"),
        ((S3,), (PG, S3), {"archive_only": True}, "the source archive is already S3"),
        ((LOCAL,), (S3,), {"ledger_only": True}, "has no .state. url"),
        ((LOCAL,), (PG,), {"archive_only": True}, "has no .archive. url"),
        ((LOCAL,), (PG, S3), {"ledger_only": True, "archive_only": True}, "cannot be used"),
    ],
)
def test_what_it_cannot_do_is_a_usage_error(
    tmp_path: Path,
    source: tuple[str, ...],
    target: tuple[str, ...],
    flags: dict[str, bool],
    message: str,
) -> None:
    options = {"ledger_only": False, "archive_only": False, **flags}
    with pytest.raises(UsageError, match=message):
        plan(_config(tmp_path, "source", *source), _config(tmp_path, "target", *target), **options)
