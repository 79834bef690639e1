"""The folders of a session against real servers: names the server's way, status, ``check``.

Run against Dovecot (``""`` namespace, ``/``) and Courier (``INBOX.`` namespace, ``.``,
no MOVE, no UIDNEXT); the naming rule itself is table-tested in ``test_names.py``.
"""

from __future__ import annotations

import logging

import pytest

from inbox_poller.errors import MailboxError, ProcessedFolderError
from inbox_poller.models import MailboxStatus
from inbox_poller.sandbox.courier.server import CourierServer
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.imapaccount import TestAccount
from tests.plugins.dovecot import KEYWORD, MakeMailbox, folder_flags, folder_uids, make_mail

needs_dovecot = pytest.mark.dovecot

UNCREATABLE = {
    # Courier: the shared namespace needs the "c" right; Dovecot: no name may begin with "~"
    "courier": ("#shared.Processed", "Access denied", 'processed_folder = "INBOX.Processed"'),
    "dovecot": ("~Processed", "Invalid mailbox name", "may create folders there"),
}


def _kind(server: TestAccount) -> str:
    return "courier" if isinstance(server, CourierServer) else "dovecot"


def _short(server: TestAccount, folder: str) -> str:
    """The name a user would configure: without the personal namespace's prefix."""
    return folder[len(server.personal_prefix) :]


def test_open_reports_what_the_server_offers(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    imap_server.append(server_folder, make_mail())
    with imap_server.client() as imap:
        expected = imap.folder_status(server_folder, ["UIDVALIDITY", "UIDNEXT"])

    status = make_dovecot_mailbox(server_folder, server=imap_server).open()

    courier = _kind(imap_server) == "courier"
    assert status == MailboxStatus(
        folder=server_folder,
        uidvalidity=expected[b"UIDVALIDITY"],
        # Courier's SELECT sends no UIDNEXT (STATUS does): nothing may depend on it
        uidnext=None if courier else expected[b"UIDNEXT"],
        keywords_allowed=True,
        can_move=not courier,
        has_uidplus=True,
        has_idle=True,
    )


def test_a_plain_name_is_spelled_under_the_personal_namespace(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    short = _short(imap_server, server_folder)
    processed = imap_server.folder_name(short) + imap_server.separator + "done"

    # "/" is the server's separator; no namespace prefix is written
    mailbox = make_dovecot_mailbox(short, server=imap_server, processed_folder=short + "/done")
    status = mailbox.open()

    assert status.folder == server_folder
    assert imap_server.folder_exists(processed)
    assert f"moved to {processed}" in mailbox.check()
    imap_server.delete_folder(processed)


@needs_dovecot
def test_a_special_use_processed_folder_is_the_one_the_server_marks(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder, processed_folder="\\Archive")
    with pytest.raises(ProcessedFolderError, match=r"no folder has the SPECIAL-USE attribute"):
        mailbox.check()

    dovecot.create_folder("Archive")  # the test server marks "Archive" \Archive
    try:
        uid = dovecot.append(imap_folder, make_mail())
        mailbox.open()
        [mail] = list(mailbox.fetch_new(0))
        assert mailbox.acknowledge(mail.key, None) == "keyword, moved"
        [moved] = folder_uids(dovecot, "Archive")
        assert KEYWORD in folder_flags(dovecot, "Archive", moved)
        assert uid not in folder_uids(dovecot, imap_folder)
    finally:
        mailbox.close()
        dovecot.delete_folder("Archive")


def test_a_processed_folder_that_cannot_be_created_fails_check_with_a_spelling_that_works(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    configured, refusal, advice = UNCREATABLE[_kind(imap_server)]
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server, processed_folder=configured)

    with pytest.raises(ProcessedFolderError) as caught:
        mailbox.check()

    message = str(caught.value)
    assert refusal in message
    prefix = imap_server.personal_prefix
    separator = imap_server.separator
    assert f'the personal namespace is "{prefix}" with separator "{separator}"' in message
    assert advice in message


def test_a_processed_folder_that_cannot_be_created_never_stops_reading(
    imap_server: TestAccount,
    server_folder: str,
    make_dovecot_mailbox: MakeMailbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configured, refusal, _advice = UNCREATABLE[_kind(imap_server)]
    uid = imap_server.append(server_folder, make_mail())
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server, processed_folder=configured)

    with caplog.at_level(logging.WARNING, logger="inbox_poller.imap"):
        mailbox.open()  # the session opens: mail can be read and archived
    [mail] = list(mailbox.fetch_new(0))
    assert mail.raw is not None
    [warning] = [r.getMessage() for r in caplog.records if r.name == "inbox_poller.imap"]
    assert refusal in warning and "not moved" in warning

    for _attempt in range(2):  # retried at each attempt, and still refused
        with pytest.raises(ProcessedFolderError, match=refusal):
            mailbox.acknowledge(mail.key, None)
    # the keyword is stored; the mail stays where it is
    assert folder_uids(imap_server, server_folder) == [uid]
    assert KEYWORD in folder_flags(imap_server, server_folder, uid)
    assert len(caplog.records) == 1  # logged once per session, reported by the caller


def test_a_missing_folder_is_a_clear_error(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    missing = server_folder + "-missing"
    with pytest.raises(MailboxError, match=f"select folder '{missing}' failed"):
        make_dovecot_mailbox(missing, server=imap_server).open()


@needs_dovecot
def test_a_watched_special_use_folder_that_no_folder_carries_is_a_clear_error(
    make_dovecot_mailbox: MakeMailbox,
) -> None:
    with pytest.raises(MailboxError, match=r"folder '\\\\Junk': no folder has the SPECIAL-USE"):
        make_dovecot_mailbox("\\Junk").open()


def test_check_describes_the_account(
    imap_server: TestAccount, server_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(server_folder, server=imap_server)
    line = mailbox.check()
    with pytest.raises(MailboxError, match="no open session"):
        list(mailbox.fetch_new(0))  # check() closed its session
    assert f"tls://127.0.0.1:{imap_server.imaps_port} as {imap_server.user}" in line
    assert f"folder {server_folder}" in line
    move = "no" if _kind(imap_server) == "courier" else "yes"
    assert f"MOVE {move}, UIDPLUS yes, IDLE yes, keywords yes" in line
    assert "handled mail: keyword $ExportArchived" in line
    assert imap_server.password not in line
