"""The throwaway Courier-IMAP: start, a restart that drops clients and keeps the mail, stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.courier import server as courier_server
from inbox_poller.sandbox.courier.install import find_courier
from inbox_poller.sandbox.courier.server import CourierServer
from tests.plugins.courier import require_courier
from tests.plugins.dovecot import make_mail

pytestmark = pytest.mark.courier


@pytest.fixture
def own_courier() -> Iterator[CourierServer]:
    """A private server for tests that stop it (the session one stays up)."""
    require_courier()
    server = CourierServer()
    yield server
    server.cleanup()


def test_a_restart_drops_clients_and_keeps_mail_ports_and_uidvalidity(
    own_courier: CourierServer,
) -> None:
    own_courier.start()
    ports = (own_courier.imap_port, own_courier.imaps_port)
    uid = own_courier.append("INBOX", make_mail())
    client = own_courier.client()
    before = client.select_folder("INBOX")[b"UIDVALIDITY"]
    leader = own_courier.settings()["PID"]

    own_courier.restart()

    with pytest.raises((IMAPClient.AbortError, OSError)):
        client.noop()
    client.shutdown()
    assert (own_courier.imap_port, own_courier.imaps_port) == ports
    assert own_courier.settings()["PID"] != leader
    with own_courier.client(tls=False) as again:
        assert again.select_folder("INBOX")[b"UIDVALIDITY"] == before
        assert again.search(["ALL"]) == [uid]


def _titles(pids: list[int]) -> list[str]:
    return [Path(f"/proc/{pid}/comm").read_text(encoding="utf-8").strip() for pid in pids]


def test_stop_leaves_no_process_and_the_host_sees_no_mount(own_courier: CourierServer) -> None:
    own_courier.start()
    leader = int(own_courier.settings()["PID"])
    namespace = courier_server._mount_namespace(leader)
    assert namespace is not None
    assert courier_server._session_members(leader)
    # an IDLE makes imapd start gamin's server, in a session of its own
    with own_courier.client() as imap:
        imap.select_folder("INBOX")
        imap.idle()
        for _ in range(50):
            if "gam_server" in _titles(courier_server._namespace_members(namespace)):
                break
            imap.idle_check(timeout=0.1)
        imap.idle_done()
    assert "gam_server" in _titles(courier_server._namespace_members(namespace))

    own_courier.stop()

    assert courier_server._session_members(leader) == []
    assert courier_server._namespace_members(namespace) == []
    assert not own_courier.running
    # the overlays and the tmpfs lived in the instance's mount namespace only
    assert not Path("/etc/courier").exists()
    assert "courier" not in Path("/etc/passwd").read_text(encoding="utf-8")


def test_a_directory_of_someone_else_is_refused(tmp_path: Path) -> None:
    require_courier()
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(InboxPollerError, match="neither empty nor a Courier instance"):
        CourierServer(tmp_path).start()
    assert (tmp_path / "precious.txt").exists()


def test_an_incomplete_prefix_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InboxPollerError, match=r"not unpacked in .* run scripts/bootstrap\.sh"):
        find_courier(tmp_path)
