"""ImapMailbox as a whole: the ``Mailbox`` contract, and one session's life.

``TestMailboxContract`` holds the behaviour every ``ports.Mailbox`` must show; it
runs through a small harness against two real servers on loopback, Dovecot and
Courier-IMAP (``INBOX.`` namespace, no MOVE, quoted FETCH keys; one server per
session, one folder per test), and against ``tests.fakes.FakeMailbox``, so the fake
the poller's unit tests rely on is known to behave like the real thing. The other
tests cover the session ImapMailbox holds: used before ``open``, and lost mid-session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from typing import Any, Protocol

import pytest

from inbox_poller.errors import MailboxError
from inbox_poller.models import FetchedMail, MailKey
from inbox_poller.ports import Mailbox
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.imapaccount import TestAccount
from tests.fakes import FakeMailbox
from tests.plugins.courier import IMAP_SERVERS
from tests.plugins.dovecot import KEYWORD, MakeMailbox, folder_flags, folder_uids, make_mail

needs_dovecot = pytest.mark.dovecot


# ---- the contract ---------------------------------------------------------------------


class MailboxHarness(Protocol):
    """What the contract tests need from a mailbox implementation and its server."""

    processed: str

    def deliver(self, raw: bytes) -> int:
        """Put a message into the watched folder and return its UID."""
        ...

    def deliver_dated(self, raw: bytes, when: datetime) -> int:
        """Put a message received at *when* (its internal date) into the watched folder."""
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


class ServerHarness:
    """The contract against a real server: Dovecot or Courier."""

    def __init__(self, server: TestAccount, folder: str, make: MakeMailbox) -> None:
        self.server = server
        self.folder = folder
        self.processed = folder + "-done"
        self._make = make

    def deliver(self, raw: bytes) -> int:
        return self.server.append(self.folder, raw)

    def deliver_dated(self, raw: bytes, when: datetime) -> int:
        with self.server.client() as imap:
            imap.append(self.folder, raw, msg_time=when)
        return max(self.uids())

    def mailbox(self, **config: Any) -> Mailbox:
        return self._make(self.folder, server=self.server, **config)

    def flags(self, uid: int, folder: str | None = None) -> set[str]:
        return folder_flags(self.server, folder or self.folder, uid)

    def uids(self, folder: str | None = None) -> list[int]:
        return folder_uids(self.server, folder or self.folder)

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

    def deliver_dated(self, raw: bytes, when: datetime) -> int:
        message_id = BytesHeaderParser().parsebytes(raw)["Message-ID"]
        return self.fake.deliver(raw, message_id, internal_date=when)

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


@pytest.fixture(params=[*IMAP_SERVERS, "fake"])
def mailbox_harness(request: pytest.FixtureRequest) -> Iterator[MailboxHarness]:
    if request.param == "fake":
        yield FakeHarness()
        return
    server: TestAccount = request.getfixturevalue(request.param)
    folder = server.folder_name(f"t-{uuid.uuid4().hex}")
    server.create_folder(folder)
    make: MakeMailbox = request.getfixturevalue("make_dovecot_mailbox")
    harness = ServerHarness(server, folder, make)
    yield harness
    with server.client() as imap:
        for name in (folder, harness.processed):
            if imap.folder_exists(name):
                imap.delete_folder(name)


def _fetch_all(mailbox: Mailbox, after_uid: int = 0) -> list[FetchedMail]:
    return list(mailbox.fetch_new(after_uid))


class TestMailboxContract:
    """Behaviour every ``ports.Mailbox`` implementation must show."""

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

    def test_fetch_new_since_a_day_skips_older_mail_on_the_server(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        now = datetime.now(UTC)
        old = mailbox_harness.deliver_dated(make_mail(subject="old"), now - timedelta(days=30))
        new = mailbox_harness.deliver(make_mail(subject="new"))
        mailbox = mailbox_harness.mailbox()
        mailbox.open()

        since = (now - timedelta(days=1)).date()
        assert [m.key.uid for m in mailbox.fetch_new(0, since)] == [new]
        assert [m.key.uid for m in _fetch_all(mailbox)] == [old, new]

    def test_acknowledge_many_marks_a_set_at_once_and_is_idempotent(
        self, mailbox_harness: MailboxHarness
    ) -> None:
        uids = [mailbox_harness.deliver(make_mail(subject=f"m{n}")) for n in range(6)]
        left = uids[3]  # a gap: the set is 1:3,5:6 in ranges
        mailbox = mailbox_harness.mailbox(processed_folder=mailbox_harness.processed)
        mailbox.open()
        mails = [m for m in _fetch_all(mailbox) if m.key.uid != left]
        wanted = [(m.key, None) for m in mails]

        assert mailbox.acknowledge_many(wanted) == ["keyword, moved"] * 5

        assert mailbox_harness.uids() == [left]
        moved = mailbox_harness.uids(mailbox_harness.processed)
        assert len(moved) == 5
        assert all(
            KEYWORD in mailbox_harness.flags(uid, mailbox_harness.processed) for uid in moved
        )
        assert mailbox.acknowledge_many(wanted) == ["not found"] * 5

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
        # never UIDNEXT: Courier does not send it
        gone = MailKey(status.folder, status.uidvalidity, max(mailbox_harness.uids()) + 5)
        assert mailbox.acknowledge(gone, None) == "not found"


# ---- the session ----------------------------------------------------------------------


@needs_dovecot
def test_fetching_before_open_is_a_clear_error(
    imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    with pytest.raises(MailboxError, match="no open session"):
        list(mailbox.fetch_new(0))


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
