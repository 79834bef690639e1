"""Fetching new mail against real servers (Dovecot, Courier): sizes per chunk, bodies one by one."""

from __future__ import annotations

from typing import Any

import pytest
from imapclient import IMAPClient

from inbox_poller.imap.fetching import FETCH_CHUNK_UIDS, chunked, fetch_item
from inbox_poller.imap.mailbox import ImapMailbox
from inbox_poller.sandbox.courier.server import CourierServer
from inbox_poller.sandbox.imapaccount import TestAccount
from tests.plugins.dovecot import MakeMailbox, imap_config_for, make_mail

needs_dovecot = pytest.mark.dovecot


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


@pytest.mark.parametrize(
    "answered",
    [
        b"BODY[HEADER.FIELDS (MESSAGE-ID)]",  # Dovecot, Cyrus
        b'BODY[HEADER.FIELDS ("MESSAGE-ID")]',  # Courier
        b"body[header.fields (message-id)]",
        b'BODY[HEADER.FIELDS  ("Message-ID")]',
        "BODY[HEADER.FIELDS (MESSAGE-ID)]",
    ],
)
def test_a_fetch_item_is_found_whatever_its_quoting_and_case(answered: bytes | str) -> None:
    item = {b"SEQ": 1, answered: b"Message-ID: <a@b>\r\n\r\n"}
    assert fetch_item(item, b"BODY[HEADER.FIELDS (MESSAGE-ID)]") == b"Message-ID: <a@b>\r\n\r\n"


def test_fetch_item_takes_the_first_key_present_and_none_when_absent() -> None:
    assert fetch_item({b"BODY[]": b"whole"}, b"BODY[]<0>", b"BODY[]") == b"whole"
    assert fetch_item({b"body[]<0>": b"part", b"BODY[]": b"whole"}, b"BODY[]<0>") == b"part"
    assert fetch_item({b"FLAGS": ()}, b"RFC822.SIZE") is None


def _record_fetches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], list[str]]]:
    """Record every FETCH the client sends (messages, data items), then send it."""
    calls: list[tuple[list[int], list[str]]] = []
    real_fetch = IMAPClient.fetch

    def fetch(self: IMAPClient, messages: Any, data: Any, modifiers: Any = None) -> Any:
        calls.append((list(messages), [str(item) for item in data]))
        return real_fetch(self, messages, data, modifiers)

    monkeypatch.setattr(IMAPClient, "fetch", fetch)
    return calls


def test_fetch_reads_sizes_per_chunk_and_bodies_one_by_one(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uids = [imap_server.append(server_folder, make_mail(subject=f"m{i}")) for i in range(5)]
    mailbox = ImapMailbox(
        imap_config_for(imap_server, server_folder),
        imap_server.password,
        ca_file=imap_server.ca_file,
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


def test_a_body_over_the_cap_is_never_requested(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big = imap_server.append(server_folder, make_mail(padding=5000))
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server, max_message_bytes=1024)
    mailbox.open()
    calls = _record_fetches(monkeypatch)

    [mail] = list(mailbox.fetch_new(0))

    assert (mail.key.uid, mail.raw) == (big, None)
    assert all(not item.startswith("BODY") for _messages, data in calls for item in data)


def test_bodies_are_fetched_only_when_the_caller_asks_for_the_next_message(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    first, second, third = (imap_server.append(server_folder, make_mail()) for _ in range(3))
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server)
    mailbox.open()
    mails = mailbox.fetch_new(0)
    assert next(mails).key.uid == first

    # another client expunges the second message while we "commit" the first
    with imap_server.client() as imap:
        imap.select_folder(server_folder)
        imap.delete_messages([second])
        imap.uid_expunge([second])

    rest = list(mails)
    if isinstance(imap_server, CourierServer):
        # Courier still serves a message another session expunged until this session
        # learns of the EXPUNGE (RFC 3501 allows it): it comes whole, never half
        assert [mail.key.uid for mail in rest] == [second, third]
        assert all(mail.raw is not None for mail in rest)
    else:
        assert [mail.key.uid for mail in rest] == [third]
