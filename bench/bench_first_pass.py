"""Benchmark: the first ``run --once`` after install, on a mailbox full of unrelated mail.

A private Dovecot (sdbox, TLS) gets a folder of ``--messages`` (50,000) ordinary ~3 KB
mails, delivered ``--age-days`` (30) days ago (MULTIAPPEND with that internal date).
Then, as a new user would: one export is submitted through the real client, the
simulator's notification is APPENDed now, and the first ``inbox-poller -c CONFIG run
--once`` on a new ledger (a child process) is timed. It must archive and acknowledge
that one export.

The anchor, measured in the same run: one ``UID SEARCH`` on the full folder (``ALL``,
and ``SINCE`` the day of the submission), the least any first pass must ask the server.

Run from the repository root: ``python3 bench/bench_first_pass.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports)

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_backlog import run_once
from bench_latency import STAT, BenchError, make_env, markdown_table, positive_int, start_dovecot
from bench_poll_cost import message

from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, ExportState
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.wiring import build_submitter

FOLDER = "full"
MULTIAPPEND_BATCH = 1000
TARGET_S = 10.0


def fill(dovecot: DovecotServer, folder: str, count: int, age_days: float) -> float:
    """MULTIAPPEND *count* mails delivered *age_days* ago; return the seconds it took."""
    when = datetime.now(UTC) - timedelta(days=age_days)
    started = time.perf_counter()
    with dovecot.client() as client:
        for first in range(0, count, MULTIAPPEND_BATCH):
            batch = [
                {"msg": message(n), "date": when}
                for n in range(first, min(first + MULTIAPPEND_BATCH, count))
            ]
            client.multiappend(folder, batch)
    return time.perf_counter() - started


def search_ms(dovecot: DovecotServer, folder: str) -> tuple[float, float, int]:
    """Time one ``UID SEARCH ALL`` and one ``UID SEARCH SINCE <today>`` (warm)."""
    since = datetime.now(UTC).date()
    with dovecot.client() as client:
        client.select_folder(folder, readonly=True)
        client.search(["ALL"])
        started = time.perf_counter()
        everything = client.search(["ALL"])
        middle = time.perf_counter()
        recent = client.search(["SINCE", since])
        ended = time.perf_counter()
    if not everything:
        raise BenchError("the folder is empty")
    return (middle - started) * 1000, (ended - middle) * 1000, len(recent)


def measure(root: Path, messages: int, age_days: float) -> list[list[str]]:
    with ExitStack() as stack:
        dovecot = start_dovecot()
        stack.callback(dovecot.cleanup)
        sim = stack.enter_context(PinpointeSimulator(root / "sim"))
        sim.send_notifications = False
        env = make_env(root / "env", dovecot, sim, FOLDER)
        seconds = fill(dovecot, FOLDER, messages, age_days)
        print(f"filled {FOLDER}: {messages} mails in {seconds:.1f}s", file=sys.stderr)
        config = env.config()
        store = Store(config.state_path)
        try:
            export = build_submitter(config, store).submit(
                ExportRequest(stat=STAT, startdate="20261101", enddate="20261102")
            )
        finally:
            store.close()
        assert export.job_id is not None

        def deliver(raw: bytes) -> None:
            dovecot.append(FOLDER, raw)

        sim.deliver = deliver
        sim.deliver_notification(export.job_id)
        # the run first: its SEARCH SINCE reads every mail's date once (Dovecot then
        # caches them), so the anchor after it is the warm cost of the same question
        elapsed = run_once(env.config_path, env.root)
        all_ms, since_ms, recent = search_ms(dovecot, FOLDER)
        print(f"first run --once: {elapsed:.1f}s", file=sys.stderr)
        store = Store(config.state_path)
        try:
            state = store.get_export(export.export_id).state
        finally:
            store.close()
        if state is not ExportState.ACKNOWLEDGED:
            raise BenchError(f"the export is {state.value} after the first run, not acknowledged")
        return [
            [f"{messages:,} mails, {age_days:g} days old + 1 notification", f"{elapsed:.2f}"],
            ["anchor: one UID SEARCH ALL", f"{all_ms / 1000:.4f}"],
            [
                f"anchor: one UID SEARCH SINCE today, warm ({recent} found)",
                f"{since_ms / 1000:.4f}",
            ],
        ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=positive_int, default=50_000)
    parser.add_argument("--age-days", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-first-", dir=args.workdir))
    try:
        rows = measure(root, args.messages, args.age_days)
    except (BenchError, InboxPollerError) as exc:
        print(f"bench_first_pass: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_first_pass: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(markdown_table(["first pass", "seconds"], rows))
    elapsed = float(rows[0][1])
    print(f"target <= {TARGET_S:g} s: {'met' if elapsed <= TARGET_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
