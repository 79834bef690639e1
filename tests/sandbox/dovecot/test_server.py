"""The throwaway Dovecot server: start, ready, stop that really drops clients, restart."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.dovecot import process as dovecot_process
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import make_mail, require_dovecot

pytestmark = pytest.mark.dovecot


@pytest.fixture
def own_dovecot() -> Iterator[DovecotServer]:
    """A private server for tests that stop or break it (the session one stays up)."""
    require_dovecot()
    server = DovecotServer()
    yield server
    server.cleanup()


def _instance_processes(server: DovecotServer) -> list[int]:
    """PIDs whose process title says they belong to *server*."""
    prefix = server.instance_name + "/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (title.startswith(prefix) or str(server.config_path) in title) and state != "Z":
            pids.append(int(entry.name))
    return pids


def test_stop_drops_connected_clients_and_leaves_no_process(
    own_dovecot: DovecotServer,
) -> None:
    own_dovecot.start()
    plain = own_dovecot.client(tls=False)
    secure = own_dovecot.client()
    secure.select_folder("INBOX")
    assert _instance_processes(own_dovecot)

    started = time.monotonic()
    own_dovecot.stop()
    elapsed = time.monotonic() - started

    for session in (plain, secure):
        with pytest.raises(IMAPClient.AbortError):
            session.noop()
        session.shutdown()  # the socket the server dropped is still ours to close
    with pytest.raises(ConnectionRefusedError):
        IMAPClient(own_dovecot.host, port=own_dovecot.imaps_port, timeout=2)
    assert _instance_processes(own_dovecot) == []
    assert not own_dovecot.running
    assert elapsed < 3  # 15-180 ms measured; the kill deadline is 10 s
    own_dovecot.stop()  # a second stop is a no-op


def test_restart_keeps_ports_mail_and_uidvalidity(own_dovecot: DovecotServer) -> None:
    own_dovecot.start()
    ports = (own_dovecot.imap_port, own_dovecot.imaps_port)
    uid = own_dovecot.append("INBOX", make_mail(subject="survives"))
    with own_dovecot.client() as imap:
        before = imap.select_folder("INBOX")[b"UIDVALIDITY"]

    own_dovecot.restart()

    assert (own_dovecot.imap_port, own_dovecot.imaps_port) == ports
    with own_dovecot.client(tls=False) as imap:
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == before
        assert imap.search(["ALL"]) == [uid]


def test_append_returns_increasing_uids_and_folders_come_and_go(
    own_dovecot: DovecotServer,
) -> None:
    own_dovecot.start()
    own_dovecot.create_folder("a.b")  # sdbox accepts dots, Maildir would not
    assert [own_dovecot.append("a.b", make_mail()) for _ in range(3)] == [1, 2, 3]
    own_dovecot.delete_folder("a.b")
    with own_dovecot.client() as imap:
        assert not imap.folder_exists("a.b")


def test_a_custom_capability_string_hides_extensions() -> None:
    require_dovecot()
    with DovecotServer(capability="IMAP4rev1 LITERAL+ UIDPLUS") as server:
        assert set(server.capabilities()) == {"IMAP4REV1", "LITERAL+", "UIDPLUS"}
        with server.client() as imap:
            assert not imap.has_capability("MOVE")


def test_the_context_manager_deletes_the_directory() -> None:
    require_dovecot()
    with DovecotServer() as server:
        directory = server.directory
        settings = server.settings()
        assert settings["IMAPS_PORT"] == str(server.imaps_port)
        assert Path(settings["CAFILE"]).is_file()
        assert directory.parent == Path(tempfile.gettempdir())
    assert not directory.exists()
    assert _instance_processes(server) == []


def test_a_bad_config_fails_fast_with_dovecots_message() -> None:
    require_dovecot()
    server = DovecotServer(extra_config="no_such_setting = 1\n")
    started = time.monotonic()
    try:
        with pytest.raises(InboxPollerError, match="no_such_setting"):
            server.start()
        assert not server.running
    finally:
        server.cleanup()
    assert time.monotonic() - started < 3


def test_a_taken_fixed_port_fails_fast_with_the_log_line() -> None:
    require_dovecot()
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        busy = squatter.getsockname()[1]
        server = DovecotServer(imap_port=busy)
        started = time.monotonic()
        try:
            with pytest.raises(InboxPollerError, match="Address already in use"):
                server.start()
        finally:
            server.cleanup()
    assert time.monotonic() - started < 3


def test_a_lost_port_race_is_retried_on_other_ports(
    own_dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_free_port = dovecot_process.free_port
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        busy = squatter.getsockname()[1]
        offered: list[int] = []

        def racy_free_port(avoid: set[int]) -> int:
            # the first probe "finds" a port that someone else takes before Dovecot binds
            port = busy if not offered else real_free_port(avoid)
            offered.append(port)
            return port

        monkeypatch.setattr(dovecot_process, "free_port", racy_free_port)
        own_dovecot.start()

    assert offered[0] == busy
    assert busy not in (own_dovecot.imap_port, own_dovecot.imaps_port)
    with own_dovecot.client() as imap:
        imap.select_folder("INBOX")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands mail to the mail user")
def test_a_directory_the_mail_user_cannot_reach_is_refused(tmp_path: Path) -> None:
    require_dovecot()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = DovecotServer(private / "instance")
    with pytest.raises(InboxPollerError, match=r"mail user .* cannot reach"):
        server.start()
    assert not server.running


def test_a_foreign_non_empty_directory_is_refused(tmp_path: Path) -> None:
    require_dovecot()
    (tmp_path / "precious.txt").write_text("keep me")
    server = DovecotServer(tmp_path)
    with pytest.raises(InboxPollerError, match="refusing to use it"):
        server.start()
    server.cleanup()
    assert (tmp_path / "precious.txt").exists()


def test_a_server_that_is_not_ready_in_time_is_stopped_and_removed(tmp_path: Path) -> None:
    require_dovecot()
    hanging = tmp_path / "dovecot"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    server = DovecotServer(binary=hanging, start_timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(InboxPollerError, match=r"did not become ready within 0.3s"), server:
        pass
    assert time.monotonic() - started < 3
    assert not server.directory.exists()
    assert not server.running
