"""The refresh-token chain on real files: rotations kept, a new configured token wins."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

from inbox_poller.oauth.chain import CHAIN_FILE, RefreshChain, digest

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _chain(tmp_path: Path, configured: list[str]) -> RefreshChain:
    return RefreshChain(lambda: configured[0], tmp_path / "state")


def test_without_a_rotation_the_configured_token_is_used(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["rt-one"])
    assert chain.current() == "rt-one"
    assert not chain.path.exists()
    assert chain.state().rotated is False


def test_a_rotated_token_is_kept_private_and_used_by_a_new_process(tmp_path: Path) -> None:
    configured = ["rt-one"]
    _chain(tmp_path, configured).rotate("rt-one", "rt-two", NOW)
    again = _chain(tmp_path, configured)  # a restart
    assert again.current() == "rt-two"
    assert again.path.stat().st_mode & 0o777 == 0o600
    stored = json.loads(again.path.read_text())
    assert stored["origin_sha256"] == digest("rt-one")
    assert "rt-one" not in again.path.read_text()  # only its digest
    again.rotate("rt-two", "rt-three", NOW)
    state = again.state()
    assert (state.rotated, state.rotations) == (True, 2)
    assert again.current() == "rt-three"
    assert [p.name for p in again.path.parent.iterdir() if p.name.startswith(".")] == []


def test_a_new_configured_token_starts_a_new_chain(tmp_path: Path) -> None:
    configured = ["rt-one"]
    chain = _chain(tmp_path, configured)
    chain.rotate("rt-one", "rt-two", NOW)
    configured[0] = "rt-new-from-auth-login"
    assert chain.current() == "rt-new-from-auth-login"
    assert chain.state().rotated is False
    chain.rotate("rt-new-from-auth-login", "rt-new-2", NOW)
    assert chain.current() == "rt-new-2"
    assert chain.state().rotations == 1


def test_the_configured_file_is_never_written(tmp_path: Path) -> None:
    configured_file = tmp_path / "refresh-token"
    configured_file.write_text("rt-one\n")
    configured_file.chmod(0o400)  # a systemd credential is read-only
    chain = RefreshChain(lambda: configured_file.read_text().strip(), tmp_path / "state")
    chain.rotate("rt-one", "rt-two", NOW)
    assert configured_file.read_text() == "rt-one\n"
    assert chain.current() == "rt-two"


def test_an_unreadable_chain_file_falls_back_to_the_configured_token(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["rt-one"])
    chain.path.parent.mkdir(parents=True)
    chain.path.write_text("{not json")
    assert chain.current() == "rt-one"


def test_the_lock_serialises_two_users_of_one_chain(tmp_path: Path) -> None:
    chain = _chain(tmp_path, ["rt-one"])
    order: list[str] = []
    with chain.locked():
        other = threading.Thread(target=lambda: _locked_append(chain, order))
        other.start()
        other.join(0.3)
        order.append("first")
    other.join(5)
    assert order == ["first", "second"]
    assert (tmp_path / "state" / CHAIN_FILE).exists() is False


def _locked_append(chain: RefreshChain, order: list[str]) -> None:
    with RefreshChain(lambda: "rt-one", chain.path.parent).locked():
        order.append("second")
