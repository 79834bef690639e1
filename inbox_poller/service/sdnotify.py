"""The systemd notify protocol, without libsystemd (docs/reliability.md §7.1).

``sd_notify(3)`` is one datagram of newline-separated ``KEY=VALUE`` lines sent to
the ``AF_UNIX`` socket named in ``$NOTIFY_SOCKET``; a name starting with ``@`` is
in the abstract namespace. When the variable is unset (not run by systemd, or
not ``Type=notify``) every call is a no-op. Modelled on systemd's MIT-0
``man/notify-selfcontained-example.py``.

A failed send is logged once at WARNING and never raised: the daemon must keep
working when the service manager went away (``systemctl daemon-reexec``, a test
socket that was closed). A successful send re-arms the warning.

Usage from the daemon::

    notifier = Notifier()
    notifier.ready()                        # config, credentials and ledger are usable
    notifier.status("3 pending exports, last poll 20s ago")
    notifier.watchdog()                     # from the loop that makes progress
    notifier.reloading(); ...; notifier.ready()
    notifier.stopping()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger("inbox_poller.service")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"

MAX_DATAGRAM_BYTES = 4096
"""systemd reads at most PIPE_BUF bytes per notification; longer datagrams are refused."""
STATUS_MAX_CHARS = 200
"""``STATUS=`` text is cut to this many characters: one line for ``systemctl status``."""
SEND_TIMEOUT_S = 1.0
"""A stuck service manager must not stall a work loop for longer than this per call."""


def _socket_address(raw: str) -> str:
    """Translate ``$NOTIFY_SOCKET`` into a Python ``AF_UNIX`` address; ``ValueError`` if invalid."""
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw  # an over-long path fails in connect(), which is handled like any send error
    # systemd >= 253 also knows vsock:..., used only for VMs and containers
    raise ValueError("expected an absolute path or an @abstract name")


def _positive_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def one_line(text: str, limit: int = STATUS_MAX_CHARS) -> str:
    """Collapse *text* to one line of at most *limit* characters, ending in "…" if cut."""
    # Control characters (newlines, NUL, escapes) would end or garble the line.
    printable = "".join(char if char.isprintable() else " " for char in text)
    flat = " ".join(printable.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1].rstrip() + "…"


class Notifier:
    """Send notifications to the service manager named by an environment mapping.

    *environ* defaults to ``os.environ`` and is read once, at construction.
    Every method returns whether a datagram was delivered; none ever raises
    ``OSError``. Safe to call from several threads: datagrams are sent one at
    a time, in call order.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._raw_socket = env.get(NOTIFY_SOCKET_ENV) or None
        self._address: str | None = None
        self._address_error: str | None = None
        if self._raw_socket is not None:
            try:
                self._address = _socket_address(self._raw_socket)
            except ValueError as exc:
                self._address_error = str(exc)
        self._watchdog_usec = _positive_int(env.get(WATCHDOG_USEC_ENV))
        self._watchdog_pid_raw = env.get(WATCHDOG_PID_ENV)
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether ``$NOTIFY_SOCKET`` was set, so that calls try to send."""
        return self._raw_socket is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None.

        None when there is no watchdog, or when ``$WATCHDOG_PID`` names another
        process (the variables were inherited, as ``sd_watchdog_enabled(3)`` says).
        """
        if self._watchdog_usec is None:
            return None
        pid_raw = self._watchdog_pid_raw
        if pid_raw is not None and _positive_int(pid_raw) != os.getpid():
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        """Report that start-up, or a reload, has finished."""
        return self.send("READY=1")

    def reloading(self) -> bool:
        """Report a reload, stamped with ``CLOCK_MONOTONIC``, in one datagram.

        ``Type=notify-reload`` (systemd >= 253) needs both lines together; sending
        them apart breaks it. Call :meth:`ready` when the reload is done.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Report that the service has begun to shut down."""
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """Show *text* (made one line, at most ``STATUS_MAX_CHARS``) in ``systemctl status``."""
        return self.send(f"STATUS={one_line(text)}")

    def watchdog(self) -> bool:
        """Tell the watchdog the service is making progress."""
        return self.send("WATCHDOG=1")

    def send(self, *lines: str) -> bool:
        """Send *lines* (``KEY=VALUE``, no newlines) as one datagram; return whether it was sent.

        A malformed line is a programming error and raises ``ValueError``.
        """
        for line in lines:
            if "\n" in line or "=" not in line:
                raise ValueError(f"not a single KEY=VALUE line: {line[:40]!r}")
        data = "\n".join(lines).encode("utf-8")
        if len(data) > MAX_DATAGRAM_BYTES:
            raise ValueError(f"notification of {len(data)} bytes exceeds {MAX_DATAGRAM_BYTES}")
        if self._raw_socket is None:
            return False
        with self._lock:
            return self._send_locked(data)

    def _send_locked(self, data: bytes) -> bool:
        if self._address is None:
            self._warn_once(f"not an AF_UNIX address ({self._address_error})")
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.connect(self._address)
                sock.sendall(data)
        except OSError as exc:
            self._warn_once(exc.strerror or str(exc))
            return False
        self._warned = False
        return True

    def _warn_once(self, reason: str) -> None:
        # The watchdog pings every few seconds: one warning per outage is enough.
        if self._warned:
            logger.debug("cannot notify systemd at %s: %s", self._raw_socket, reason)
            return
        self._warned = True
        logger.warning(
            "cannot notify systemd at %s: %s (further failures are logged at DEBUG)",
            self._raw_socket,
            reason,
        )
