"""Benchmark: a backlog of notifications archived by 1, 2 and 3 daemons on one PostgreSQL ledger.

For each daemon count of ``--daemons`` (1,2,3): a fresh database on a private, durable
PostgreSQL (``fsync`` on), a fresh folder on a private Dovecot and the Pinpointe
simulator (payloads of ``--payload-bytes``, 10 KB). ``--count`` exports (1,000) are
submitted in process through the real client, each notification rendered by the
simulator and put in the folder with MULTIAPPEND; then that many ``inbox-poller run``
daemons (child processes, ``[daemon] download_workers`` each) start at once. One of
them holds the mailbox lock and reads the mail; all of them claim and download. The
figure is the count divided by the time from the start of the daemons to the last
export acknowledged (read from the ledger every 0.2 s), and the speed-up is against one
daemon. The run is checked: every export acknowledged, one manifest line and one file
each, the folder empty.

Run from the repository root: ``python3 bench/bench_scaleout.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports)

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_backlog import deliver_all
from bench_latency import STAT, BenchError, make_env, markdown_table, start_dovecot

from inbox_poller.errors import InboxPollerError
from inbox_poller.models import ExportRequest, ExportState
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.postgres.server import PostgresServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.wiring import build_submitter, open_store
from tests.plugins.daemon import DaemonProcess

DONE_TIMEOUT_S = 900.0


@dataclass
class Result:
    daemons: int
    count: int
    seconds: float
    """From the daemons' start to the last export acknowledged."""
    first_archived_s: float
    """From the start to the first export archived (start-up and the first batch read)."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def _on_postgres(config_path: Path, url: str, password_file: Path, workers: int) -> None:
    text = config_path.read_text(encoding="utf-8")
    text = text.replace(
        '[state]\npath = "state/state.db"',
        f'[state]\nurl = "{url}"\npassword_file = "{password_file}"',
    )
    config_path.write_text(text + f"\n[daemon]\ndownload_workers = {workers}\n", encoding="utf-8")


def measure(
    root: Path,
    dovecot: DovecotServer,
    postgres: PostgresServer,
    daemons: int,
    count: int,
    payload_bytes: int,
    workers: int,
) -> Result:
    folder = f"scaleout-{daemons}"
    database = postgres.create_database()
    with PinpointeSimulator(root / f"sim-{daemons}", payload_bytes=payload_bytes) as sim:
        sim.send_notifications = False
        env = make_env(root / folder, dovecot, sim, folder)
        _on_postgres(env.config_path, postgres.url_for(database), postgres.password_file, workers)
        config = env.config()
        print(f"{daemons} daemon(s), {count} notifications:", file=sys.stderr)
        with open_store(config) as store:
            submitter = build_submitter(config, store)
            jobs = []
            for _ in range(count):
                export = submitter.submit(ExportRequest(STAT, "20261101", "20261102"))
                assert export.job_id is not None
                jobs.append(export.job_id)
        deliver_all(sim, dovecot, folder, jobs)
        print(f"  {count} notifications in the folder", file=sys.stderr)
        processes: list[DaemonProcess] = []
        started = time.perf_counter()
        first_archived: float | None = None
        try:
            processes = [DaemonProcess(env, None) for _ in range(daemons)]
            with open_store(config, read_only=True) as store:
                while True:
                    counts = store.counts_by_state()
                    now = time.perf_counter() - started
                    done = counts.get(ExportState.ACKNOWLEDGED.value, 0)
                    if first_archived is None and (
                        done or counts.get(ExportState.ARCHIVED.value, 0)
                    ):
                        first_archived = now
                    if done == count:
                        break
                    if now > DONE_TIMEOUT_S:
                        raise BenchError(f"not done in {DONE_TIMEOUT_S:.0f} s: {counts}")
                    for process in processes:
                        if process.process.poll() is not None:
                            raise BenchError(f"a daemon exited:\n{process.log()[-2000:]}")
                    time.sleep(0.2)
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(20)
                finally:
                    process.kill()
        print(f"  done in {elapsed:.1f}s", file=sys.stderr)
        lines = env.manifest()
        if len(lines) != count or len({line["job_id"] for line in lines}) != count:
            raise BenchError(f"{len(lines)} manifest lines for {count} exports")
        if len(env.archived_files()) != count or env.messages():
            raise BenchError("not every export archived once and acknowledged")
        shutil.rmtree(env.archive_dir, ignore_errors=True)
        dovecot.delete_folder(folder)
        dovecot.delete_folder(env.processed)
    postgres.drop_database(database)
    return Result(daemons, count, elapsed, first_archived or elapsed)


def report(results: Sequence[Result]) -> str:
    base = results[0]
    rows = [
        [
            str(r.daemons),
            f"{r.count:,}",
            f"{r.seconds:.1f}",
            f"{r.first_archived_s:.1f}",
            f"{r.rate:.1f}",
            f"{base.seconds / r.seconds:.2f}x" if base.daemons == 1 else "-",
        ]
        for r in results
    ]
    headers = ["daemons", "exports", "seconds", "first archived s", "exports/s", "speed-up"]
    return markdown_table(headers, rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--daemons",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 2, 3],
        help="daemon counts, comma-separated (default 1,2,3)",
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--payload-bytes", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="download_workers per daemon")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-scaleout-", dir=args.workdir))
    try:
        with ExitStack() as stack:
            dovecot = start_dovecot()
            stack.callback(dovecot.cleanup)
            postgres = PostgresServer(durable=True)
            postgres.start()
            stack.callback(postgres.cleanup)
            results = [
                measure(root, dovecot, postgres, n, args.count, args.payload_bytes, args.workers)
                for n in args.daemons
            ]
    except (BenchError, InboxPollerError) as exc:
        print(f"bench_scaleout: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_scaleout: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
