"""The selected folder against a real Dovecot: its status, the processed folder, ``check``."""

from __future__ import annotations

import pytest

from inbox_poller.errors import MailboxError
from inbox_poller.models import MailboxStatus
from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import MakeMailbox, make_mail

needs_dovecot = pytest.mark.dovecot


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
