"""Marking handled mail on servers without MOVE (Courier, a Dovecot variant), UIDPLUS or keywords.

What every server must do (keyword, move, idempotence, lookup by Message-ID) is in the
contract in ``test_mailbox.py``; these cover what the server's capabilities change.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest

from inbox_poller.imap.marking import uid_set
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.imapaccount import TestAccount
from tests.plugins.dovecot import KEYWORD, MakeMailbox, folder_flags, folder_uids, make_mail

needs_dovecot = pytest.mark.dovecot


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("dovecot", marks=needs_dovecot),  # MOVE hidden
        pytest.param("courier", marks=pytest.mark.courier),  # no MOVE at all
    ],
)
def test_copy_and_uid_expunge_spare_another_clients_deleted_mail(
    kind: str,
    request: pytest.FixtureRequest,
    dovecot_variant: Callable[..., DovecotServer],
    make_dovecot_mailbox: MakeMailbox,
) -> None:
    server: TestAccount = (
        request.getfixturevalue("courier") if kind == "courier" else dovecot_variant(hide=("MOVE",))
    )
    suffix = uuid.uuid4().hex[:8]
    folder = server.folder_name(f"inbox-no-move-{suffix}")
    processed = folder + "-done"
    server.create_folder(folder)
    ours = server.append(folder, make_mail(subject="ours"))
    theirs = server.append(folder, make_mail(subject="theirs"), flags=("\\Deleted",))
    mailbox = make_dovecot_mailbox(folder, server=server, processed_folder=processed)
    status = mailbox.open()
    assert (status.can_move, status.has_uidplus) == (False, True)
    key = next(mail.key for mail in mailbox.fetch_new(0) if mail.key.uid == ours)

    assert mailbox.acknowledge(key, None) == "keyword, moved"

    assert folder_uids(server, folder) == [theirs]
    assert "\\Deleted" in folder_flags(server, folder, theirs)
    [moved] = folder_uids(server, processed)
    assert KEYWORD in folder_flags(server, processed, moved)


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

    assert folder_uids(server, folder) == [first, second]
    assert all("\\Deleted" not in folder_flags(server, folder, uid) for uid in (first, second))
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
        assert folder_uids(server, folder) == []
        [moved] = folder_uids(server, target)
        assert KEYWORD not in folder_flags(server, target, moved)
    else:
        assert KEYWORD not in folder_flags(server, folder, uid)
        assert folder_uids(server, folder) == [uid]


def test_a_uid_set_is_written_as_ranges() -> None:
    assert uid_set([9, 1, 2, 3, 5, 12, 13, 14, 3]) == "1:3,5,9,12:14"
    assert uid_set([7]) == "7"
    with pytest.raises(ValueError, match="empty"):
        uid_set([])
