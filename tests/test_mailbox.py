"""ImapMailbox against a real Dovecot on loopback (one server per session, one folder per test).

``TestMailboxContract`` holds the behaviour every ``poller.Mailbox`` must show; it
runs through a small harness against Dovecot and against ``tests.fakes.FakeMailbox``,
so the fake the poller's unit tests rely on is known to behave like the real thing.
The other tests cover what only a real server shows: TLS, capabilities, drops and
the wire.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser
from typing import Any, Protocol

import pytest
from imapclient import IMAPClient

from inbox_poller.config import ImapConfig
from inbox_poller.errors import MailboxError, MailboxLoginError
from inbox_poller.imap.fetching import FETCH_CHUNK_UIDS, chunked
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.imap.session import IMAPLIB_LOGGER
from inbox_poller.models import FetchedMail, MailboxStatus, MailKey
from inbox_poller.ports import Mailbox
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.fakes import FakeMailbox
from tests.plugins.dovecot import imap_config_for, make_mail

KEYWORD = "$ExportArchived"
needs_dovecot = pytest.mark.dovecot
MakeMailbox = Callable[..., ImapMailbox]


# ---- the contract ---------------------------------------------------------------------


class MailboxHarness(Protocol):
    """What the contract tests need from a mailbox implementation and its server."""

    processed: str

    def deliver(self, raw: bytes) -> int:
        """Put a message into the watched folder and return its UID."""
        ...

    def mailbox(self, **config: Any) -> Mailbox:
        """Return an unopened mailbox on the watched folder (``**config``: ImapConfig fields)."""
        ...

    def flags(self, uid: int, folder: str | None = None) -> set[str]:
        """Return the flags of *uid* in *folder* (default: the watched folder)."""
        ...

    def uids(self, folder: str | None = None) -> list[int]: ...

    def recreate_folder(self) -> None:
        """Delete and re-create the watched folder, so its UIDVALIDITY changes."""
        ...


class DovecotHarness:
    def __init__(self, server: DovecotServer, folder: str, make: MakeMailbox) -> None:
        self.server = server
        self.folder = folder
        self.processed = folder + "-done"
        self._make = make

    def deliver(self, raw: bytes) -> int:
        return self.server.append(self.folder, raw)

    def mailbox(self, **config: Any) -> Mailbox:
        return self._make(self.folder, server=self.server, **config)

    def flags(self, uid: int, folder: str | None = None) -> set[str]:
        with self.server.client() as imap:
            imap.select_folder(folder or self.folder, readonly=True)
            found = imap.fetch([uid], ["FLAGS"]).get(uid)
        assert found is not None, f"UID {uid} is not in {folder or self.folder}"
        return {flag.decode() for flag in found[b"FLAGS"]}

    def uids(self, folder: str | None = None) -> list[int]:
        with self.server.client() as imap:
            imap.select_folder(folder or self.folder, readonly=True)
            return sorted(imap.search(["ALL"]))

    def recreate_folder(self) -> None:
        self.server.delete_folder(self.folder)
        self.server.create_folder(self.folder)


class FakeHarness:
    """The same contract against ``tests.fakes.FakeMailbox``: the fake must behave alike."""

    processed = "processed"

    def __init__(self) -> None:
        self.fake = FakeMailbox("INBOX")

    def deliver(self, raw: bytes) -> int:
        message_id = BytesHeaderParser().parsebytes(raw)["Message-ID"]
        return self.fake.deliver(raw, message_id)

    def mailbox(self, **config: Any) -> Mailbox:
        self.fake.max_message_bytes = config.get("max_message_bytes", 1024**2)
        self.fake.move_to_processed = config.get("processed_folder") is not None
        return self.fake

    def flags(self, uid: int, folder: str | None = None) -> set[str]:
        if folder == self.processed:
            return set(self.fake.processed[uid - 1].flags)
        return set(self.fake.messages[uid].flags)

    def uids(self, folder: str | None = None) -> list[int]:
        if folder == self.processed:
            return list(range(1, len(self.fake.processed) + 1))
        return sorted(self.fake.messages)

    def recreate_folder(self) -> None:
        self.fake.reset_uidvalidity()
        self.fake.messages.clear()
        self.fake.next_uid = 1


@pytest.fixture(params=[pytest.param("dovecot", marks=needs_dovecot), "fake"])
def mailbox_harness(request: pytest.FixtureRequest) -> Iterator[MailboxHarness]:
    if request.param == "fake":
        yield FakeHarness()
        return
    dovecot: DovecotServer = request.getfixturevalue("dovecot")
    folder: str = request.getfixturevalue("imap_folder")
    make: MakeMailbox = request.getfixturevalue("make_dovecot_mailbox")
    harness = DovecotHarness(dovecot, folder, make)
    yield harness
    with dovecot.client() as imap:
        if imap.folder_exists(harness.processed):
            imap.delete_folder(harness.processed)


def _fetch_all(mailbox: Mailbox, after_uid: int = 0) -> list[FetchedMail]:
    return list(mailbox.fetch_new(after_uid))


class TestMailboxContract:
    """Behaviour every ``poller.Mailbox`` implementation must show."""

    def test_new_mail_comes_in_ascending_uid_order_with_its_bytes(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        raws = [make_mail(subject=f"n{i}") for i in range(3)]
        uids = [mailbox_harness.deliver(raw) for raw in raws]
        mailbox = mailbox_harness.mailbox()
        status = mailbox.open()

        fetched = _fetch_all(mailbox)

        assert [mail.key.uid for mail in fetched] == sorted(uids)
        assert [mail.raw for mail in fetched] == raws
        assert all(mail.key.uidvalidity == status.uidvalidity for mail in fetched)
        assert all(mail.size == len(raw) for mail, raw in zip(fetched, raws, strict=True))

    def test_the_watermark_excludes_what_was_already_seen(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        first = mailbox_harness.deliver(make_mail(subject="old"))
        mailbox = mailbox_harness.mailbox()
        mailbox.open()
        last = _fetch_all(mailbox)[-1].key.uid
        assert last == first

        # "UID SEARCH UID n:*" with n above every UID still returns the highest one
        assert _fetch_all(mailbox, last) == []
        assert _fetch_all(mailbox, last + 100) == []

        newer = mailbox_harness.deliver(make_mail(subject="new"))
        assert [mail.key.uid for mail in _fetch_all(mailbox, last)] == [newer]

    def test_a_message_over_the_size_cap_comes_without_its_body(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        small = mailbox_harness.deliver(make_mail(subject="small"))
        big = mailbox_harness.deliver(make_mail(subject="big", padding=3000))
        mailbox = mailbox_harness.mailbox(max_message_bytes=2048)
        mailbox.open()

        fetched = {mail.key.uid: mail for mail in _fetch_all(mailbox)}

        assert fetched[small].raw is not None
        assert fetched[big].raw is None
        assert fetched[big].size > 3000

    def test_reading_a_message_does_not_mark_it_seen(self, mailbox_harness: MailboxHarness) -> None:
        uid = mailbox_harness.deliver(make_mail())
        mailbox = mailbox_harness.mailbox()
        mailbox.open()
        assert _fetch_all(mailbox)[0].raw is not None

        assert "\\Seen" not in mailbox_harness.flags(uid)

    def test_acknowledge_keywords_and_moves(self, mailbox_harness: MailboxHarness) -> None:
        uid = mailbox_harness.deliver(make_mail())
        mailbox = mailbox_harness.mailbox(processed_folder=mailbox_harness.processed)
        mailbox.open()
        mail = _fetch_all(mailbox)[0]

        assert mailbox.acknowledge(mail.key, None) == "keyword, moved"

        assert uid not in mailbox_harness.uids()
        moved = mailbox_harness.uids(mailbox_harness.processed)
        assert len(moved) == 1
        assert KEYWORD in mailbox_harness.flags(moved[0], mailbox_harness.processed)

    def test_acknowledge_keyword_only_without_a_processed_folder(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        uid = mailbox_harness.deliver(make_mail())
        mailbox = mailbox_harness.mailbox()
        mailbox.open()
        mail = _fetch_all(mailbox)[0]

        assert mailbox.acknowledge(mail.key, None) == "keyword"
        assert KEYWORD in mailbox_harness.flags(uid)
        assert "\\Seen" not in mailbox_harness.flags(uid)

    def test_acknowledge_is_idempotent(self, mailbox_harness: MailboxHarness) -> None:
        kept = mailbox_harness.deliver(make_mail(subject="kept"))
        moved = mailbox_harness.deliver(make_mail(subject="moved"))
        keyword_only = mailbox_harness.mailbox()
        keyword_only.open()
        mails = {mail.key.uid: mail for mail in _fetch_all(keyword_only)}

        assert keyword_only.acknowledge(mails[kept].key, None) == "keyword"
        assert keyword_only.acknowledge(mails[kept].key, None) == "keyword"
        keyword_only.close()

        mover = mailbox_harness.mailbox(processed_folder=mailbox_harness.processed)
        mover.open()
        assert mover.acknowledge(mails[moved].key, None) == "keyword, moved"
        assert mover.acknowledge(mails[moved].key, None) == "not found"
        assert len(mailbox_harness.uids(mailbox_harness.processed)) == 1

    def test_after_a_uidvalidity_change_the_mail_is_found_by_message_id(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        message_id = "<export-42@mypinpointe.com>"
        raw = make_mail(message_id=message_id)
        mailbox_harness.deliver(raw)
        mailbox = mailbox_harness.mailbox()
        old_status = mailbox.open()
        old_key = _fetch_all(mailbox)[0].key
        mailbox.close()

        mailbox_harness.recreate_folder()
        # a decoy whose Message-ID contains the wanted one: HEADER search matches substrings
        decoy = mailbox_harness.deliver(make_mail(message_id="<xexport-42@mypinpointe.com>"))
        again = mailbox_harness.deliver(raw)
        new_status = mailbox.open()
        assert new_status.uidvalidity != old_status.uidvalidity

        assert mailbox.acknowledge(old_key, message_id) == "keyword"
        assert KEYWORD in mailbox_harness.flags(again)
        assert KEYWORD not in mailbox_harness.flags(decoy)

    def test_an_unknown_mail_is_not_found(self, mailbox_harness: MailboxHarness) -> None:
        mailbox_harness.deliver(make_mail())
        mailbox = mailbox_harness.mailbox()
        status = mailbox.open()
        stale = MailKey(status.folder, status.uidvalidity - 1, 1)

        assert mailbox.acknowledge(stale, None) == "not found"
        assert mailbox.acknowledge(stale, "<nobody@example.test>") == "not found"
        gone = MailKey(status.folder, status.uidvalidity, status.uidnext + 5)
        assert mailbox.acknowledge(gone, None) == "not found"


# ---- Dovecot-only behaviour -----------------------------------------------------------


def _flags(server: DovecotServer, folder: str, uid: int) -> set[str]:
    with server.client() as imap:
        imap.select_folder(folder, readonly=True)
        found = imap.fetch([uid], ["FLAGS"]).get(uid)
    assert found is not None, f"UID {uid} is not in {folder}"
    return {flag.decode() for flag in found[b"FLAGS"]}


def _uids(server: DovecotServer, folder: str) -> list[int]:
    with server.client() as imap:
        imap.select_folder(folder, readonly=True)
        return sorted(imap.search(["ALL"]))


@needs_dovecot
def test_open_reports_what_the_server_offers(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    dovecot.append(imap_folder, make_mail())
    with dovecot.client() as imap:
        expected = imap.folder_status(imap_folder, ["UIDVALIDITY", "UIDNEXT"])

    status = make_dovecot_mailbox(imap_folder).open()

    assert status == MailboxStatus(
        folder=imap_folder,
        uidvalidity=expected[b"UIDVALIDITY"],
        uidnext=expected[b"UIDNEXT"],
        keywords_allowed=True,
        can_move=True,
        has_uidplus=True,
        has_idle=True,
    )


@needs_dovecot
def test_open_creates_the_processed_folder(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    processed = imap_folder + "/done"
    make_dovecot_mailbox(imap_folder, processed_folder=processed).open()

    with dovecot.client() as imap:
        assert imap.folder_exists(processed)
        imap.delete_folder(processed)


@needs_dovecot
def test_a_missing_folder_is_a_clear_error(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    with pytest.raises(MailboxError, match=f"select folder '{imap_folder}-missing' failed"):
        make_dovecot_mailbox(imap_folder + "-missing").open()


@needs_dovecot
def test_fetching_before_open_is_a_clear_error(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    with pytest.raises(MailboxError, match="no open session"):
        list(mailbox.fetch_new(0))


def test_chunked_splits_in_order() -> None:
    assert list(chunked([1, 2, 3, 4, 5, 6, 7], 3)) == [[1, 2, 3], [4, 5, 6], [7]]
    assert list(chunked([], 3)) == []
    assert list(chunked(list(range(1, 12001)))) == [
        list(range(1, 5001)),
        list(range(5001, 10001)),
        list(range(10001, 12001)),
    ]
    assert FETCH_CHUNK_UIDS == 5000
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 0))


def _record_fetches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], list[str]]]:
    """Record every FETCH the client sends (messages, data items), then send it."""
    calls: list[tuple[list[int], list[str]]] = []
    real_fetch = IMAPClient.fetch

    def fetch(self: IMAPClient, messages: Any, data: Any, modifiers: Any = None) -> Any:
        calls.append((list(messages), [str(item) for item in data]))
        return real_fetch(self, messages, data, modifiers)

    monkeypatch.setattr(IMAPClient, "fetch", fetch)
    return calls


@needs_dovecot
def test_fetch_reads_sizes_per_chunk_and_bodies_one_by_one(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = [dovecot.append(imap_folder, make_mail(subject=f"m{i}")) for i in range(5)]
    mailbox = ImapMailbox(
        imap_config_for(dovecot, imap_folder),
        dovecot.password,
        ca_file=dovecot.ca_file,
        fetch_chunk=2,
    )
    try:
        mailbox.open()
        calls = _record_fetches(monkeypatch)
        fetched = [mail.key.uid for mail in mailbox.fetch_new(0)]
    finally:
        mailbox.close()

    assert fetched == uids
    size_calls = [messages for messages, data in calls if "RFC822.SIZE" in data]
    assert size_calls == [uids[0:2], uids[2:4], uids[4:5]]
    body_calls = [messages for messages, data in calls if data[0].startswith("BODY.PEEK[]")]
    assert body_calls == [[uid] for uid in uids]


@needs_dovecot
def test_a_body_over_the_cap_is_never_requested(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = dovecot.append(imap_folder, make_mail(padding=5000))
    mailbox = make_dovecot_mailbox(imap_folder, max_message_bytes=1024)
    mailbox.open()
    calls = _record_fetches(monkeypatch)

    [mail] = list(mailbox.fetch_new(0))

    assert (mail.key.uid, mail.raw) == (big, None)
    assert all(not item.startswith("BODY") for _messages, data in calls for item in data)


@needs_dovecot
def test_bodies_are_fetched_only_when_the_caller_asks_for_the_next_message(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    first, second, third = (dovecot.append(imap_folder, make_mail()) for _ in range(3))
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    mails = mailbox.fetch_new(0)
    assert next(mails).key.uid == first

    # another client expunges the second message while we "commit" the first
    with dovecot.client() as imap:
        imap.select_folder(imap_folder)
        imap.delete_messages([second])
        imap.uid_expunge([second])

    assert [mail.key.uid for mail in mails] == [third]


@needs_dovecot
def test_copy_and_uid_expunge_spare_another_clients_deleted_mail(
    dovecot_variant: Callable[..., DovecotServer], make_dovecot_mailbox: MakeMailbox
) -> None:
    server = dovecot_variant(hide=("MOVE",))
    folder, processed = "inbox-no-move", "inbox-no-move-done"
    server.create_folder(folder)
    ours = server.append(folder, make_mail(subject="ours"))
    theirs = server.append(folder, make_mail(subject="theirs"), flags=("\\Deleted",))
    mailbox = make_dovecot_mailbox(folder, server=server, processed_folder=processed)
    status = mailbox.open()
    assert (status.can_move, status.has_uidplus) == (False, True)
    key = next(mail.key for mail in mailbox.fetch_new(0) if mail.key.uid == ours)

    assert mailbox.acknowledge(key, None) == "keyword, moved"

    assert _uids(server, folder) == [theirs]
    assert "\\Deleted" in _flags(server, folder, theirs)
    [moved] = _uids(server, processed)
    assert KEYWORD in _flags(server, processed, moved)


@needs_dovecot
def test_without_move_or_uidplus_mail_is_only_keyworded(
    dovecot_variant: Callable[..., DovecotServer],
    make_dovecot_mailbox: MakeMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = dovecot_variant(hide=("MOVE", "UIDPLUS"))
    folder = "inbox-no-uidplus"
    server.create_folder(folder)
    first = server.append(folder, make_mail())
    second = server.append(folder, make_mail())
    mailbox = make_dovecot_mailbox(folder, server=server, processed_folder=folder + "-done")
    status = mailbox.open()
    assert (status.can_move, status.has_uidplus) == (False, False)
    keys = [mail.key for mail in mailbox.fetch_new(0)]

    with caplog.at_level(logging.WARNING, logger="inbox_poller.imap"):
        assert [mailbox.acknowledge(key, None) for key in keys] == ["keyword", "keyword"]

    assert _uids(server, folder) == [first, second]
    assert all("\\Deleted" not in _flags(server, folder, uid) for uid in (first, second))
    warnings = [r for r in caplog.records if "neither MOVE nor UIDPLUS" in r.getMessage()]
    assert len(warnings) == 1


@needs_dovecot
@pytest.mark.parametrize(("processed", "expected"), [(True, "moved"), (False, "ledger only")])
def test_without_keywords_mail_is_moved_or_left_to_the_ledger(
    dovecot_variant: Callable[..., DovecotServer],
    make_dovecot_mailbox: MakeMailbox,
    processed: bool,
    expected: str,
) -> None:
    # like Exchange: PERMANENTFLAGS without \*, so no custom keyword can be stored
    server = dovecot_variant(keywordless="nokw-*")
    folder = f"nokw-{uuid.uuid4().hex}"
    target = folder + "-done" if processed else None
    server.create_folder(folder)
    uid = server.append(folder, make_mail())
    mailbox = make_dovecot_mailbox(folder, server=server, processed_folder=target)
    status = mailbox.open()
    assert status.keywords_allowed is False
    [mail] = list(mailbox.fetch_new(0))

    assert mailbox.acknowledge(mail.key, None) == expected

    if target is not None:
        assert _uids(server, folder) == []
        [moved] = _uids(server, target)
        assert KEYWORD not in _flags(server, target, moved)
    else:
        assert KEYWORD not in _flags(server, folder, uid)
        assert _uids(server, folder) == [uid]


# ---- TLS, login and connection failures -----------------------------------------------


@needs_dovecot
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_a_server_certificate_from_an_unknown_ca_is_refused(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox, security: str
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder, security=security, trust_ca=False)
    with pytest.raises(MailboxError, match="certificate verification failed") as caught:
        mailbox.open()
    assert "imap.ca_file" in str(caught.value)
    assert not isinstance(caught.value, MailboxLoginError)


@needs_dovecot
@pytest.mark.parametrize("security", ["starttls", "plain"])
def test_starttls_with_the_ca_and_plain_text_on_loopback_work(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox, security: str
) -> None:
    dovecot.append(imap_folder, make_mail())
    mailbox = make_dovecot_mailbox(imap_folder, security=security)
    mailbox.open()
    assert len(list(mailbox.fetch_new(0))) == 1


@needs_dovecot
def test_a_wrong_password_is_a_login_error(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder, password="not-the-password")
    with pytest.raises(MailboxLoginError, match="refused") as caught:
        mailbox.open()
    assert caught.value.retryable is False
    assert "not-the-password" not in str(caught.value)


@needs_dovecot
def test_a_stopped_server_is_a_mailbox_error(
    dovecot_variant: Callable[..., DovecotServer], make_dovecot_mailbox: MakeMailbox
) -> None:
    server = dovecot_variant(hide=("IDLE",))
    mailbox = make_dovecot_mailbox("INBOX", server=server)
    server.stop()
    try:
        with pytest.raises(MailboxError, match=rf"127.0.0.1:{server.imaps_port}: connect failed"):
            mailbox.open()
    finally:
        server.start()


@needs_dovecot
def test_a_restart_mid_session_fails_the_next_call_and_open_recovers(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    dovecot_restart: Callable[[], None],
) -> None:
    first = dovecot.append(imap_folder, make_mail())
    mailbox = make_dovecot_mailbox(imap_folder)
    before = mailbox.open()
    assert [mail.key.uid for mail in mailbox.fetch_new(0)] == [first]

    dovecot_restart()

    with pytest.raises(MailboxError, match="search for new mail failed: connection lost"):
        list(mailbox.fetch_new(first))
    mailbox.close()  # never raises, even now
    second = dovecot.append(imap_folder, make_mail())
    assert mailbox.open().uidvalidity == before.uidvalidity
    assert [mail.key.uid for mail in mailbox.fetch_new(first)] == [second]


def imap_config_for_port(port: int, **overrides: Any) -> ImapConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "username": "someone",
        "password_env": "UNUSED",
    }
    values.update(overrides)
    return ImapConfig(**values)


class _SilentServer:
    """A loopback TCP server that greets (or not) and answers only CAPABILITY and LOGOUT."""

    def __init__(self, greeting: bytes | None) -> None:
        self.received: list[bytes] = []
        self._greeting = greeting
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # closed before anyone connected
            return
        with conn:
            if self._greeting is not None:
                conn.sendall(self._greeting)
            buffer = b""
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                while b"\r\n" in buffer:
                    line, buffer = buffer.split(b"\r\n", 1)
                    self.received.append(line)
                    tag = line.split(b" ", 1)[0]
                    if line.upper().endswith(b"CAPABILITY"):
                        conn.sendall(
                            b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
                        )
                    elif line.upper().startswith(tag + b" LOGOUT"):
                        conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")

    def close(self) -> None:
        self._listener.close()


def test_starttls_that_is_not_offered_is_refused_before_login() -> None:
    server = _SilentServer(b"* OK fake IMAP ready\r\n")
    config = imap_config_for_port(server.port, security="starttls")
    mailbox = ImapMailbox(config, "canary-password")
    try:
        with pytest.raises(MailboxError, match="does not offer STARTTLS"):
            mailbox.open()
    finally:
        mailbox.close()
        server.close()
    assert not any(b"LOGIN" in line.upper() for line in server.received)


def test_a_server_that_never_answers_times_out() -> None:
    server = _SilentServer(None)
    config = imap_config_for_port(server.port, security="plain", timeout_s=0.3)
    mailbox = ImapMailbox(config, "canary-password")
    started = time.monotonic()
    try:
        with pytest.raises(MailboxError, match=r"connect failed: no answer within 0.3s"):
            mailbox.open()
    finally:
        server.close()
    assert time.monotonic() - started < 2


# ---- session details ------------------------------------------------------------------


@needs_dovecot
def test_tcp_keepalive_is_on(imap_folder: str, make_dovecot_mailbox: MakeMailbox) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    client = mailbox._client  # white box: the option is invisible otherwise
    assert client is not None
    sock = client.socket()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60


@needs_dovecot
def test_logs_hold_no_password_and_no_body_even_at_debug(
    dovecot: DovecotServer,
    imap_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "CANARY-SIGNATURE-7f3a"
    dovecot.append(imap_folder, make_mail(body=f"https://x.test/a?sig={canary}\n"))
    caplog.set_level(logging.DEBUG)
    mailbox = make_dovecot_mailbox(imap_folder, processed_folder=imap_folder + "-done")
    mailbox.open()
    [mail] = list(mailbox.fetch_new(0))
    assert mail.raw is not None and canary.encode() in mail.raw
    mailbox.acknowledge(mail.key, None)
    mailbox.close()
    dovecot.delete_folder(imap_folder + "-done")

    assert logging.getLogger(IMAPLIB_LOGGER).getEffectiveLevel() >= logging.INFO
    assert caplog.records, "the canary check needs some DEBUG logging to look at"
    assert canary not in caplog.text
    assert dovecot.password not in caplog.text


@needs_dovecot
def test_check_describes_the_account(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    line = mailbox.check()
    with pytest.raises(MailboxError, match="no open session"):
        list(mailbox.fetch_new(0))  # check() closed its session
    assert f"tls://127.0.0.1:{dovecot.imaps_port} as {dovecot.user}" in line
    assert f"folder {imap_folder}" in line
    assert "MOVE yes, UIDPLUS yes, IDLE yes, keywords yes" in line
    assert "handled mail: keyword $ExportArchived" in line
    assert dovecot.password not in line


@needs_dovecot
def test_idle_wait_reports_new_mail_and_times_out_quietly(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    started = time.monotonic()
    assert mailbox.idle_wait(0.2) is False
    assert 0.15 < time.monotonic() - started < 2

    timer = threading.Timer(0.1, dovecot.append, (imap_folder, make_mail()))
    timer.start()
    try:
        # Dovecot delays IDLE notifications by 500 ms (docs/dovecot.md)
        assert mailbox.idle_wait(5) is True
    finally:
        timer.join()
    assert len(list(mailbox.fetch_new(0))) == 1


@needs_dovecot
def test_idle_wait_without_idle_falls_back_to_noop(
    dovecot_variant: Callable[..., DovecotServer], make_dovecot_mailbox: MakeMailbox
) -> None:
    server = dovecot_variant(hide=("IDLE",))
    server.create_folder("no-idle")
    try:
        mailbox = make_dovecot_mailbox("no-idle", server=server)
        assert mailbox.open().has_idle is False
        assert mailbox.idle_wait(0.05) is False
        server.append("no-idle", make_mail())
        assert mailbox.idle_wait(0.05) is True
    finally:
        server.delete_folder("no-idle")
