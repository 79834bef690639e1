"""Benchmark: the cost of a poll that finds no new mail, 50,000 messages against 100.

A private Dovecot (sdbox) gets two folders, seeded with MULTIAPPEND: ``--messages``
(50,000) and ``--small`` (100) messages of about 3 KB. For each folder the daemon's own
objects are built from a generated config (``wiring.build_loop``), the mailbox is
opened, and the ledger is given what a daemon that has read the whole folder would
hold: one row per message and the watermark at the top. Then, alternating between the
two folders so drift hits both alike, it times:

* ``fetch_new`` alone: the IMAP part of a poll (NOOP + ``UID SEARCH UID n:*``, nothing
  fetched);
* ``Poller.read_mail(status, report)``: exactly what the watcher's pass does first,
  with no export waiting for its notification (the ledger's re-match is skipped);
* the same while one export waits for its notification, which is when a poll matters:
  ``read_mail`` then re-matches the unmatched mails of the last 7 days, so it reads the
  ``mails`` table. Measured twice: with the ledger's rows older than that window (a
  mailbox read long ago) and within it (a full mailbox first read this week);
* a reconnect and pass (``open``, which logs the old session out, + ``read_mail``),
  for context.

The ledger rows are written with SQL into the schema ``ledger/schema.py`` created (through
``record_mail`` they would take 50,000 fsynced transactions); they are the rows
``record_mail`` writes for an unmatched mail, with its summary.

Run from the repository root: ``python3 bench/bench_poll_cost.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports, so the
# script runs as ``python3 bench/bench_poll_cost.py`` without PYTHONPATH)

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# bench/ has no __init__.py: bench_latency is imported as a top-level module (as mypy
# names it); the repository root is for inbox_poller and tests
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_latency import (
    STAT,
    BenchError,
    make_env,
    markdown_table,
    percentile,
    positive_int,
    start_dovecot,
)

from inbox_poller.errors import InboxPollerError
from inbox_poller.loop.parts import LoopParts
from inbox_poller.loop.reader import DEFAULT_REMATCH_WINDOW
from inbox_poller.models import CycleReport, ExportRequest, MailboxStatus, MailOutcome, utc_now
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.wiring import build_loop

MULTIAPPEND_BATCH = 500
TARGET_RATIO = 1.2
WAITING_JOB_ID = "500999999"
_MESSAGE = (
    "From: Newsletter {n} <news{n}@example.org>\r\n"
    "To: exports@inbox.example\r\n"
    "Subject: Weekly digest number {n}\r\n"
    "Date: Mon, 03 Nov 2025 10:00:00 +0000\r\n"
    "Message-ID: <digest-{n}@example.org>\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b{n}"\r\n'
    "\r\n"
    "--b{n}\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "{text}\r\n"
    "Read more: https://www.example.org/digest/{n}\r\n"
    "--b{n}\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    '<html><body><p>{text}</p><a href="https://www.example.org/digest/{n}">Read more</a>'
    "</body></html>\r\n"
    "--b{n}--\r\n"
)
_TEXT = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 22


def message(number: int) -> bytes:
    """Return an ordinary ~3 KB multipart/alternative mail, distinct per *number*."""
    return _MESSAGE.format(n=number, text=_TEXT).encode("ascii")


def seed(dovecot: DovecotServer, folder: str, count: int) -> float:
    """Fill *folder* with *count* messages by MULTIAPPEND; return the seconds it took."""
    started = time.perf_counter()
    with dovecot.client() as client:
        for first in range(0, count, MULTIAPPEND_BATCH):
            batch = [message(n) for n in range(first, min(first + MULTIAPPEND_BATCH, count))]
            client.multiappend(folder, batch)
    return time.perf_counter() - started


@dataclass
class Subject:
    """One folder under test, with the daemon's loop for it."""

    name: str
    messages: int
    parts: LoopParts
    status: MailboxStatus
    state_path: Path
    times: dict[str, list[float]] = field(default_factory=dict)

    @property
    def top_uid(self) -> int:
        assert self.status.uidnext is not None, "Dovecot always reports UIDNEXT"
        return self.status.uidnext - 1


def open_subject(
    root: Path, dovecot: DovecotServer, sim: PinpointeSimulator, messages: int
) -> Subject:
    folder = f"poll-{messages}"
    env = make_env(root / folder, dovecot, sim, folder)
    seconds = seed(dovecot, folder, messages)
    print(f"seeded {folder}: {messages} messages in {seconds:.1f}s", file=sys.stderr)
    config = env.config()
    parts = build_loop(config)
    status = parts.mailbox.open()
    if status.uidnext is None or status.uidnext - 1 != messages:
        raise BenchError(f"{folder}: UIDNEXT {status.uidnext} after {messages} APPENDs")
    return Subject(folder, messages, parts, status, config.state_path)


def fill_ledger(subject: Subject, seen_days_ago: float) -> None:
    """Give the ledger one unmatched row per message, seen that long ago; watermark on top."""
    seen = (utc_now() - timedelta(days=seen_days_ago)).isoformat()
    status = subject.status
    rows = (
        (
            status.folder,
            status.uidvalidity,
            uid,
            f"<digest-{uid - 1}@example.org>",
            MailOutcome.UNMATCHED.value,
            "no pending export mentions a job ID of this mail",
            json.dumps(_summary(uid - 1)),
            seen,
        )
        for uid in range(1, subject.top_uid + 1)
    )
    with sqlite3.connect(subject.state_path) as conn:
        conn.execute("DELETE FROM mails")
        conn.executemany(
            "INSERT INTO mails (mailbox, uidvalidity, uid, message_id, outcome, reason,"
            " summary, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute(
            "INSERT INTO watermarks (mailbox, uidvalidity, last_uid) VALUES (?, ?, ?)"
            " ON CONFLICT (mailbox, uidvalidity) DO UPDATE SET last_uid = excluded.last_uid",
            (status.folder, status.uidvalidity, subject.top_uid),
        )
    conn.close()
    if subject.parts.store.watermark(status.folder, status.uidvalidity) != subject.top_uid:
        raise BenchError(f"{subject.name}: the watermark is not at the top")


def _summary(number: int) -> dict[str, object]:
    """What ``matching.summary.summarize`` keeps of such a mail."""
    url = f"https://www.example.org/digest/{number}"
    return {
        "message_id": f"<digest-{number}@example.org>",
        "sender": f"news{number}@example.org",
        "subject": f"Weekly digest number {number}",
        "tokens": [str(number), f"news{number}@example.org", url],
        "links": [[url, "Read more", "html", None], [url, url, "text", None]],
        "candidates": [],
    }


def add_waiting_export(subject: Subject) -> None:
    """Put one export in ``submitted``: the daemon waits for its notification."""
    store = subject.parts.store
    now = utc_now()
    export = store.create_export(
        ExportRequest(stat=STAT, startdate="20261101", enddate="20261102"), now
    )
    store.mark_submitted(export.export_id, WAITING_JOB_ID, '{"status":"SUCCESS"}', now)


# ---- the operations --------------------------------------------------------------------------


def op_fetch_new(subject: Subject) -> None:
    found = list(subject.parts.mailbox.fetch_new(subject.top_uid))
    if found:
        raise BenchError(f"{subject.name}: fetch_new found {len(found)} message(s)")


def op_read_mail(subject: Subject) -> None:
    report = CycleReport()
    subject.parts.poller.reader.read(subject.parts.mailbox, subject.status, report)
    if report.mails_seen or report.failed:
        raise BenchError(f"{subject.name}: the poll was not empty: {report}")


def op_reconnect(subject: Subject) -> None:
    subject.status = (
        subject.parts.mailbox.open()
    )  # logs the old session out first, as the watcher does
    op_read_mail(subject)


def time_op(
    name: str,
    subjects: Sequence[Subject],
    operation: Callable[[Subject], None],
    reps: int,
    warmup: int,
) -> None:
    """Run *operation* on every subject in turn, *warmup* + *reps* times; keep the reps."""
    print(f"timing {name}: {reps} repetitions per folder", file=sys.stderr)
    for subject in subjects:
        subject.times[name] = []
    for rep in range(warmup + reps):
        for subject in subjects if rep % 2 else reversed(subjects):
            started = time.perf_counter()
            operation(subject)
            elapsed = time.perf_counter() - started
            if rep >= warmup:
                subject.times[name].append(elapsed)


# ---- main ---------------------------------------------------------------------------------

OPERATIONS = (
    ("imap", "IMAP only: NOOP + UID SEARCH (fetch_new)"),
    ("read_mail", "read_mail, no export waiting"),
    ("reconnect", "reconnect + read_mail (LOGOUT, connect, TLS, LOGIN, SELECT, pass)"),
    ("waiting_old", "read_mail, 1 export waiting, ledger rows > 7 days old"),
    ("waiting_new", "read_mail, 1 export waiting, ledger rows < 7 days old"),
)


def measure(args: argparse.Namespace, root: Path) -> list[Subject]:
    with ExitStack() as stack:
        dovecot = start_dovecot()
        stack.callback(dovecot.cleanup)
        sim = stack.enter_context(PinpointeSimulator(root / "sim"))
        sim.send_notifications = False
        small = open_subject(root, dovecot, sim, args.small)
        big = open_subject(root, dovecot, sim, args.messages)
        subjects = [small, big]
        # rows beyond the re-match window: a mailbox the daemon read long ago
        old_days = DEFAULT_REMATCH_WINDOW.days * 4
        for subject in subjects:
            stack.callback(subject.parts.close)
            fill_ledger(subject, seen_days_ago=old_days)
        time_op("imap", subjects, op_fetch_new, args.reps, args.warmup)
        time_op("read_mail", subjects, op_read_mail, args.reps, args.warmup)
        time_op("reconnect", subjects, op_reconnect, args.reconnect_reps, 2)
        for subject in subjects:
            add_waiting_export(subject)
        time_op("waiting_old", subjects, op_read_mail, args.reps, args.warmup)
        for subject in subjects:
            fill_ledger(subject, seen_days_ago=1)
        time_op("waiting_new", subjects, op_read_mail, args.slow_reps, 1)
        return subjects


def report(subjects: Sequence[Subject]) -> str:
    small, big = subjects
    headers = [
        "operation",
        f"{small.messages:,} msgs median ms",
        "p95 ms",
        f"{big.messages:,} msgs median ms",
        "p95 ms",
        "ratio (medians)",
    ]
    rows = []
    for key, label in OPERATIONS:
        a, b = small.times[key], big.times[key]
        rows.append(
            [
                f"{label} (n={len(a)})",
                _ms(statistics.median(a)),
                _ms(percentile(a, 95)),
                _ms(statistics.median(b)),
                _ms(percentile(b, 95)),
                f"{statistics.median(b) / statistics.median(a):.2f}x",
            ]
        )
    lines = ["Cost of one poll with no new mail (Dovecot sdbox, TLS, loopback)", ""]
    lines.append(markdown_table(headers, rows))
    lines.append("")
    for key, label in OPERATIONS[:2] + OPERATIONS[3:4]:
        ratio = statistics.median(big.times[key]) / statistics.median(small.times[key])
        verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
        lines.append(f"target <= {TARGET_RATIO:g}x, {label}: {verdict} ({ratio:.2f}x)")
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}" if seconds < 1 else f"{seconds * 1000:,.0f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=positive_int, default=50_000, help="the big folder")
    parser.add_argument("--small", type=positive_int, default=100, help="the small folder")
    parser.add_argument("--reps", type=positive_int, default=300, help="timed polls per folder")
    parser.add_argument("--warmup", type=int, default=20, help="untimed polls first")
    parser.add_argument("--reconnect-reps", type=positive_int, default=30)
    parser.add_argument(
        "--slow-reps", type=positive_int, default=3, help="polls re-matching the whole ledger"
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-poll-", dir=args.workdir))
    try:
        subjects = measure(args, root)
    except (BenchError, InboxPollerError) as exc:
        print(f"bench_poll_cost: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_poll_cost: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report(subjects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
