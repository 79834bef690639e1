"""A hostile IMAP server on loopback whose answer to LOGIN repeats the command (fault injection).

``echoing_imap`` starts ``EchoingImapServer(mode)``: plain text on a free loopback
port, one thread per connection. It greets, answers CAPABILITY and LOGOUT, and answers
LOGIN (or AUTHENTICATE) by repeating the client's whole line, password included:

* ``"no"``: ``tag NO [AUTHENTICATIONFAILED] <line> rejected``;
* ``"bad"``: ``tag BAD <line>: syntax error``;
* ``"untagged"``: ``* NO <line>`` first, then a plain ``tag NO``;
* ``"bye"``: ``* BYE <line>``, then the connection is closed.

No real server does this on purpose; some broken ones and proxies have (red-team
finding 6 of issue 9).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

ECHO_MODES = ("no", "bad", "untagged", "bye")


class EchoingImapServer:
    """The server; ``lines`` holds every line clients sent, for the test to look at."""

    def __init__(self, mode: str) -> None:
        if mode not in ECHO_MODES:
            raise ValueError(f"unknown echo mode {mode!r}")
        self.mode = mode
        self.lines: list[bytes] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="echo-imap", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):  # wakes the accept() that waits in the thread
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] echo server ready\r\n")
            for line in reader:
                self.lines.append(line)
                tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
                command = rest.split(b" ", 1)[0].upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                elif command in (b"LOGIN", b"AUTHENTICATE"):
                    if not self._echo(conn, tag, line.rstrip(b"\r\n")):
                        return
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                    return
                else:
                    conn.sendall(tag + b" BAD unknown command\r\n")

    def _echo(self, conn: socket.socket, tag: bytes, line: bytes) -> bool:
        """Answer LOGIN with the command repeated; return whether the session goes on."""
        if self.mode == "no":
            conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] " + line + b" rejected\r\n")
        elif self.mode == "bad":
            conn.sendall(tag + b" BAD " + line + b": syntax error\r\n")
        elif self.mode == "untagged":
            conn.sendall(b"* NO " + line + b"\r\n" + tag + b" NO login failed\r\n")
        else:
            conn.sendall(b"* BYE " + line + b"\r\n")
            return False
        return True


@pytest.fixture
def echoing_imap() -> Iterator[Callable[[str], EchoingImapServer]]:
    """Return ``start(mode)``: an ``EchoingImapServer`` on loopback, closed at teardown."""
    started: list[EchoingImapServer] = []

    def start(mode: str) -> EchoingImapServer:
        server = EchoingImapServer(mode)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
