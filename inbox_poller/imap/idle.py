"""Waiting for new mail on a selected folder: IDLE (RFC 2177), or NOOP polling without it.

``ImapMailbox.idle_wait`` delegates here. Every wait is bounded (by its timeout,
by the socket's read timeout for DONE) and is interruptible every ``IDLE_SLICE_S``.
The two quirks handled here: imaplib may already hold the server's next lines in its
buffered reader, where polling the socket cannot see them; and ``idle_check``
swallows an EOF, so a dead connection must be noticed by other means.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient

from inbox_poller.imap.session import Guard

IDLE_SLICE_S = 0.2
"""How often an IDLE (or NOOP-polling) wait checks whether it was interrupted: bounds how
late a stop or wake request is noticed."""


def is_bye(response: Any) -> bool:
    """Return whether an untagged response is the server's ``BYE``."""
    return isinstance(response, tuple) and len(response) >= 2 and response[0] == b"BYE"


def is_new_mail(response: Any) -> bool:
    """Return whether an untagged response reports new mail (``EXISTS`` or ``RECENT``)."""
    return (
        isinstance(response, tuple) and len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")
    )


def wait_for_mail(
    client: IMAPClient,
    guard: Guard,
    *,
    has_idle: bool,
    timeout_s: float,
    interrupted: Callable[[], bool] | None,
    read_timeout_s: float,
) -> list[Any]:
    """Wait as ``ImapMailbox.idle_wait`` describes; return the untagged responses seen.

    *guard* translates library exceptions for each step; *read_timeout_s* is the
    socket's read timeout, restored after peeking at imaplib's buffer.
    """
    if not has_idle:
        # RFC 2177 forbids IDLE unless advertised: sleep, then let NOOP report changes
        pause(timeout_s, interrupted)
        with guard("NOOP"):
            _text_response, responses = client.noop()
        return list(responses)
    with guard("IDLE"):
        client.idle()
        collected = _idle_collect(client, timeout_s, interrupted, read_timeout_s)
        # DONE is awaited with the read timeout: this is where a silent server is caught
        _text_response, after = client.idle_done()
    return [*collected, *after]


def pause(timeout_s: float, interrupted: Callable[[], bool] | None) -> None:
    """Sleep *timeout_s*, in slices, returning early once *interrupted()* is true."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        if interrupted is not None and interrupted():
            return
        time.sleep(min(remaining, IDLE_SLICE_S))


def _readable_now(sock: socket.socket) -> bool:
    """Return whether *sock* has something to read (data, EOF or an error) right now."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


def _input_already_read(client: IMAPClient, read_timeout_s: float) -> bool:
    """Return whether imaplib's reader holds bytes that polling the socket cannot see.

    Dovecot answers IDLE with ``+ idling`` and any change it held back (one that
    came less than 500 ms before the previous DONE) in one write; imaplib reads
    both into its buffered reader (``IMAP4.file``) while looking for ``+ idling``,
    and ``idle_check`` only polls the socket, so that EXISTS would wait for the
    next DONE. ``peek`` on the non-blocking socket shows the buffer without
    waiting.
    """
    reader = getattr(getattr(client, "_imap", None), "file", None)
    if reader is None or not hasattr(reader, "peek"):
        return False  # another imaplib layout: only the IDLE window bounds the delay
    sock = client.socket()
    sock.setblocking(False)
    try:
        return bool(reader.peek(1))
    except OSError:  # nothing buffered and nothing to read (would block)
        return False
    finally:
        sock.settimeout(read_timeout_s)


def _idle_collect(
    client: IMAPClient,
    timeout_s: float,
    interrupted: Callable[[], bool] | None,
    read_timeout_s: float,
) -> list[Any]:
    """Collect IDLE responses until new mail or BYE, *timeout_s*, or *interrupted()*.

    ``idle_check`` polls the socket for at most its timeout, so each slice is bounded.
    It swallows an EOF (and a line cut short) and returns ``[]`` at once, even though
    the socket stays readable; then the wait ends, so ``idle_done`` meets the dead
    connection now instead of this loop spinning until *timeout_s*. Lines that
    arrived together with ``+ idling`` also end the wait at once; ``idle_done``
    returns them.
    """
    if _input_already_read(client, read_timeout_s):
        return []
    deadline = time.monotonic() + timeout_s
    collected: list[Any] = []
    while (remaining := deadline - time.monotonic()) > 0:
        if interrupted is not None and interrupted():
            break
        responses = client.idle_check(timeout=min(remaining, IDLE_SLICE_S))
        collected.extend(responses)
        if any(is_bye(response) or is_new_mail(response) for response in responses):
            break
        if not responses and _readable_now(client.socket()):
            break
    return collected
