"""Finding Dovecot: a missing binary names the install command, in CI a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.dovecot.process import INSTALL_HINT, find_dovecot
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import require_dovecot

pytestmark = pytest.mark.dovecot


def test_a_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(InboxPollerError, match=INSTALL_HINT):
        find_dovecot(search_path="")
    with pytest.raises(InboxPollerError, match="apt-get install -y dovecot-imapd"):
        DovecotServer(search_path=str(tmp_path))


def test_the_fixture_skips_without_dovecot_but_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=INSTALL_HINT):
        require_dovecot(search_path=str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=INSTALL_HINT):
        require_dovecot(search_path=str(tmp_path))
