"""Fetching new mail against real servers (Dovecot, Courier): sizes per chunk, bodies in groups."""

from __future__ import annotations

from typing import Any

import pytest
from imapclient import IMAPClient

from inbox_poller.imap import fetching
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


def test_chunked_can_make_the_first_chunk_smaller() -> None:
    # fetch_new's first chunk is one body group, so that the first mail is read sooner
    assert list(chunked(list(range(1, 9)), 3, first=2)) == [[1, 2], [3, 4, 5], [6, 7, 8]]
    assert list(chunked([1, 2], 3, first=5)) == [[1, 2]]
    assert list(chunked([1, 2, 3, 4], 2, first=5)) == [[1, 2], [3, 4]]  # never over size
    assert list(chunked([], 3, first=2)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(chunked([1], 3, first=0))


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


def test_fetch_reads_sizes_per_chunk_and_bodies_in_one_fetch_per_chunk(
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
    assert body_calls == [uids[0:2], uids[2:4], uids[4:5]]


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


def test_a_group_of_bodies_is_fetched_only_when_the_caller_asks_for_its_first_message(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetching, "BODY_GROUP_MAILS", 1)  # each message its own group
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


def _group_calls(calls: list[tuple[list[int], list[str]]]) -> list[tuple[list[int], str]]:
    return [(messages, data[0]) for messages, data in calls if data[0].startswith("BODY.PEEK[]")]


def test_a_group_ends_at_its_count_or_its_bytes_and_skips_mail_over_the_cap(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = [imap_server.append(server_folder, make_mail(subject=f"s{i}")) for i in range(4)]
    over = imap_server.append(server_folder, make_mail(subject="over", padding=9000))
    last = imap_server.append(server_folder, make_mail(subject="last"))
    big = imap_server.append(server_folder, make_mail(subject="big", padding=3000))
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server, max_message_bytes=8192)
    mailbox.open()
    sizes = {mail.key.uid: mail.size for mail in mailbox.fetch_new(0)}
    monkeypatch.setattr(fetching, "BODY_GROUP_MAILS", 3)
    # room for three small ones, never for the big one beside another
    monkeypatch.setattr(fetching, "BODY_GROUP_BYTES", 2 * (sizes[big] + 1) - 1)
    calls = _record_fetches(monkeypatch)

    fetched = {mail.key.uid: mail for mail in mailbox.fetch_new(0)}

    def cap(*uids: int) -> str:
        return f"BODY.PEEK[]<0.{max(sizes[uid] for uid in uids) + 1}>"

    assert _group_calls(calls) == [
        (small[0:3], cap(*small[0:3])),  # its count
        ([small[3], last], cap(small[3], last)),  # the one over the cap is skipped
        ([big], "BODY.PEEK[]<0.8193>"),  # its bytes: alone, with the mail's own cap
    ]
    assert fetched[over].raw is None and fetched[over].size > 8192
    assert all(len(fetched[uid].raw or b"") == sizes[uid] for uid in [*small, last, big])


def test_a_body_the_group_cap_cut_because_its_size_was_understated_is_fetched_alone(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = imap_server.append(server_folder, make_mail(subject="first"))
    liar = imap_server.append(server_folder, make_mail(subject="liar", padding=2000))
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server, max_message_bytes=8192)
    mailbox.open()
    whole = {mail.key.uid: mail.raw for mail in mailbox.fetch_new(0)}
    real_fetch = IMAPClient.fetch
    calls: list[tuple[list[int], list[str]]] = []

    def understating(self: IMAPClient, messages: Any, data: Any, modifiers: Any = None) -> Any:
        calls.append((list(messages), [str(item) for item in data]))
        answer = real_fetch(self, messages, data, modifiers)
        if liar in answer and b"RFC822.SIZE" in answer[liar]:
            answer[liar][b"RFC822.SIZE"] = 100  # a server that understates it
        return answer

    monkeypatch.setattr(IMAPClient, "fetch", understating)
    fetched = {mail.key.uid: mail.raw for mail in mailbox.fetch_new(0)}

    assert fetched == whole
    assert [messages for messages, _ in _group_calls(calls)] == [[first, liar], [liar]]
    assert _group_calls(calls)[1][1] == "BODY.PEEK[]<0.8193>"
