"""Waiting for new mail against a real Dovecot: IDLE, NOOP polling, and the watcher's needs.

The last tests pin down what the mailbox watcher relies on: a change Dovecot held
back across DONE is still reported at once, and a wait ends early when interrupted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from inbox_poller.sandbox.dovecot.server import DovecotServer
from tests.plugins.dovecot import MakeMailbox, make_mail

needs_dovecot = pytest.mark.dovecot


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


# ---- ImapMailbox.idle_wait, as the watcher relies on it -------------------------------


@needs_dovecot
def test_idle_wait_sees_a_change_held_back_across_done(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    # DONE 0.2 s after the APPEND, inside Dovecot's 500 ms notification delay: the
    # EXISTS is held back and sent right behind the next "+ idling", in one write
    for _attempt in range(3):
        timer = threading.Timer(0.1, dovecot.append, (imap_folder, make_mail()))
        timer.start()
        try:
            reported_before_done = mailbox.idle_wait(0.3)
        finally:
            timer.join()
        if not reported_before_done:
            break
    else:
        pytest.fail("the APPEND was always reported before DONE; the machine is too slow")
    started = time.monotonic()
    assert mailbox.idle_wait(5.0) is True
    # imaplib has already buffered it while reading "+ idling": polling the socket
    # alone would leave it there until the next DONE, 5 s later
    assert time.monotonic() - started < 1.0


@needs_dovecot
def test_idle_wait_ends_early_when_interrupted(
    dovecot: DovecotServer, imap_folder: str, make_dovecot_mailbox: MakeMailbox
) -> None:
    mailbox = make_dovecot_mailbox(imap_folder)
    mailbox.open()
    started = time.monotonic()
    assert mailbox.idle_wait(30.0, lambda: time.monotonic() - started > 0.3) is False
    assert 0.3 <= time.monotonic() - started < 0.8
    uid = dovecot.append(imap_folder, make_mail())
    assert [mail.key.uid for mail in mailbox.fetch_new(0)] == [uid], "the session is intact"
