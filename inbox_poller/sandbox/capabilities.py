"""Measure what an IMAP server offers a client like ours: the table in docs/providers.md.

``python -m inbox_poller.sandbox.capabilities`` starts each throwaway server that can
run here (Dovecot, Courier), measures it and prints one Markdown row per server:
MOVE, UIDPLUS, custom keywords (stored and read back, not only announced), IDLE and
how long an APPEND from another session takes to show as EXISTS, the personal
namespace and separator, whether SELECT reports UIDNEXT, SPECIAL-USE, and how FETCH
echoes a ``HEADER.FIELDS`` section. ``tests/sandbox/test_capabilities.py`` runs the
same measurement on both servers.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from imapclient import IMAPClient

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox.imapaccount import TestAccount

IDLE_SAMPLES = 5
IDLE_WAIT_S = 10.0
KEYWORD = "$CapabilityProbe"
PROBE_MAIL = b"Message-ID: <probe@example.test>\r\nSubject: probe\r\n\r\nprobe\r\n"


@dataclass(frozen=True)
class Capabilities:
    """What one server offered, as measured."""

    name: str
    move: bool
    uidplus: bool
    keywords: bool
    idle: bool
    idle_delay_s: tuple[float, ...] | None
    """Seconds from APPEND (in another session) to EXISTS during IDLE, per sample; None
    when the server pushed nothing within ``idle_wait_s``."""
    namespace: str
    separator: str
    uidnext_in_select: bool
    special_use: bool
    header_fields_key: str
    """The key the server's FETCH answer uses for ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]``."""
    idle_wait_s: float = IDLE_WAIT_S
    """How long each IDLE sample waited for the push."""

    def row(self) -> str:
        """One Markdown table row."""

        def yes(flag: bool) -> str:
            return "yes" if flag else "**no**"

        delays = self.idle_delay_s
        if not self.idle:
            push = yes(False)
        elif not delays:
            push = f"announced, but **no push** within {self.idle_wait_s:.0f} s"
        else:
            push = f"yes: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s"
        return (
            f"| {self.name} | {yes(self.move)} | {yes(self.uidplus)} | {yes(self.keywords)} "
            f'| {push} | `"{self.namespace}"` / `"{self.separator}"` '
            f"| {yes(self.uidnext_in_select)} | {yes(self.special_use)} "
            f"| `{self.header_fields_key}` |"
        )


HEADER = (
    "| server | MOVE | UIDPLUS | custom keywords | IDLE push (APPEND → EXISTS) "
    "| personal namespace / separator | UIDNEXT in SELECT | SPECIAL-USE "
    "| FETCH key for HEADER.FIELDS |\n|---|---|---|---|---|---|---|---|---|"
)


def measure(
    name: str,
    server: TestAccount,
    *,
    idle_samples: int = IDLE_SAMPLES,
    idle_wait_s: float = IDLE_WAIT_S,
) -> Capabilities:
    """Measure the running *server* through its test account (a fresh folder, deleted after).

    Each of *idle_samples* IDLE pushes is awaited at most *idle_wait_s*.
    """
    folder = server.folder_name(f"probe-{uuid.uuid4().hex[:8]}")
    server.create_folder(folder)
    try:
        with server.client() as imap:
            names = {cap.decode().upper() for cap in imap.capabilities()}
            personal = imap.namespace().personal[0]
            server.append(folder, PROBE_MAIL)
            selected = imap.select_folder(folder)
            [uid] = imap.search(["ALL"])
            imap.add_flags([uid], [KEYWORD])
            flags = imap.fetch([uid], ["FLAGS"])[uid][b"FLAGS"]
            keywords = KEYWORD.encode() in flags and b"\\*" in selected.get(b"PERMANENTFLAGS", ())
            answer = imap.fetch([uid], ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])[uid]
            key = next(k for k in answer if isinstance(k, bytes) and k.startswith(b"BODY"))
            special = "SPECIAL-USE" in names or any(
                flag.decode().lower() in ("\\sent", "\\trash", "\\archive", "\\junk")
                for flags_, _sep, _name in imap.list_folders()
                for flag in flags_
            )
            delays = (
                _idle_delays(imap, server, folder, idle_samples, idle_wait_s)
                if "IDLE" in names
                else None
            )
        return Capabilities(
            name=name,
            move="MOVE" in names,
            uidplus="UIDPLUS" in names,
            keywords=keywords,
            idle="IDLE" in names,
            idle_delay_s=None if delays is None else tuple(delays),
            namespace=personal[0],
            separator=personal[1],
            uidnext_in_select=b"UIDNEXT" in selected,
            special_use=special,
            header_fields_key=key.decode(),
            idle_wait_s=idle_wait_s,
        )
    finally:
        server.delete_folder(folder)


def _idle_delays(
    imap: IMAPClient, server: TestAccount, folder: str, samples: int, wait_s: float
) -> list[float] | None:
    """Time APPEND (another session) → EXISTS seen in IDLE, *samples* times (None: no push)."""
    delays = []
    for _ in range(samples):
        imap.idle()
        time.sleep(0.1)  # the server is idling before the mail arrives
        started = time.monotonic()
        server.append(folder, PROBE_MAIL)
        seen = None
        while seen is None and time.monotonic() - started < wait_s:
            for response in imap.idle_check(timeout=0.05):
                if isinstance(response, tuple) and response[1:2] == (b"EXISTS",):
                    seen = time.monotonic() - started
        imap.idle_done()
        if seen is None:
            return None
        delays.append(seen)
    return delays


def main() -> int:
    """Measure every server that runs here; print the table (and why a server is missing)."""
    from inbox_poller.sandbox.courier.server import CourierServer
    from inbox_poller.sandbox.dovecot.server import DovecotServer

    # Courier without IMAP_ENHANCEDIDLE looks for new mail every IMAP_IDLE_TIMEOUT (60 s)
    servers: list[tuple[str, Callable[[], DovecotServer | CourierServer], int, float]] = [
        ("Dovecot 2.3", DovecotServer, IDLE_SAMPLES, IDLE_WAIT_S),
        ("Courier-IMAP 5 (IMAP_ENHANCEDIDLE=1)", CourierServer, IDLE_SAMPLES, IDLE_WAIT_S),
        (
            "Courier-IMAP 5 (Debian's IMAP_ENHANCEDIDLE=0)",
            lambda: CourierServer(enhanced_idle=False),
            2,
            90.0,
        ),
    ]
    rows = []
    for name, make, samples, wait_s in servers:
        try:
            with make() as server:
                rows.append(measure(name, server, idle_samples=samples, idle_wait_s=wait_s).row())
        except InboxPollerError as exc:
            print(f"{name}: not measured: {exc}", file=sys.stderr)
    print(HEADER)
    print("\n".join(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
