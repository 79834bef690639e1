"""Benchmark: a backlog of notifications archived by one ``run --once``, exports per second.

For each count of ``--counts`` (1,000 and 10,000) a fresh folder and ledger on a private
Dovecot (sdbox, TLS) and the Pinpointe simulator (payloads of ``--payload-bytes``,
100 KB): that many exports are submitted in process through the real client
(``wiring.build_submitter``), each notification is rendered by the simulator and put in
the folder with MULTIAPPEND, and then one ``inbox-poller -c CONFIG run --once`` (a child
process, as cron runs it) reads, downloads, archives and acknowledges all of them. The
figure is the count divided by that process's wall time. The run is checked: every
payload archived once, one manifest line each, every mail moved out of the folder.

The anchors, measured in the same run: the disk's fsync rate (a 100-byte write and
``fsync`` of a small file in the archive's directory, repeated), how many payloads one
thread makes durable per second with the least disk work each needs (write, fsync,
rename, fsync the directory: what no batching can share) and one IMAP ``UID SEARCH`` on
the full folder. Beside them, the CPU every process of the machine used during
the run (``/proc/stat``: the run and its mail reader, the simulator, Dovecot) and how busy
that kept the machine's CPUs: what is left idle is what one process's design leaves unused.

Dovecot and the simulator stand in for the mail provider's and Pinpointe's servers, which
are other machines, so the bench keeps them off the archive's disk and out of the run's way:
their files live on a tmpfs (``/dev/shm`` when there is one; ``--servers-dir``), and the
run's log goes to a file, as under cron, not to a pipe the simulator's process must read
line by line. The anchors' probe files are made after the runs: ext4 without a journal
makes every new file skip, one by one, the inodes freed in the last 30 seconds.

Run from the repository root: ``python3 bench/bench_backlog.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports)

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cli_startup import compile_tree, environment
from bench_latency import STAT, BenchError, make_env, markdown_table, start_dovecot
from delaylink import DelayedLink

from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportRequest, ExportState
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.wiring import build_submitter

REPO_ROOT = BENCH_DIR.parent
MULTIAPPEND_BATCH = 200
FSYNC_SAMPLES = 300
TARGET_RATE = 200.0
TARGET_SCALING = 10.5
SHARED_MEMORY = Path("/dev/shm")


def fsync_rate(directory: Path, samples: int = FSYNC_SAMPLES) -> float:
    """Return fsyncs per second of a small file in *directory* (write 100 bytes, fsync)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        started = time.perf_counter()
        for _ in range(samples):
            os.write(fd, b"x" * 99 + b"\n")
            os.fsync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return samples / elapsed


def payload_rate(directory: Path, payload_bytes: int, samples: int = FSYNC_SAMPLES) -> float:
    """Return payloads per second that one thread makes durable in *directory* with the
    least disk work an archived payload needs: create a private file, write the payload,
    fsync, rename it into another directory, fsync that directory (no ledger, no
    manifest: the floor any design pays per payload file)."""
    parts, final = directory / "parts", directory / "final"
    parts.mkdir(parents=True, exist_ok=True)
    final.mkdir(exist_ok=True)
    payload = os.urandom(payload_bytes)
    started = time.perf_counter()
    for n in range(samples):
        part = parts / f".{n}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, final / f"{n}.json")
        fd = os.open(final, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - started
    shutil.rmtree(directory, ignore_errors=True)
    return samples / elapsed


def search_ms(dovecot: DovecotServer, folder: str) -> float:
    """Return the milliseconds of one ``UID SEARCH ALL`` on *folder* (after a warm-up)."""
    with dovecot.client() as client:
        client.select_folder(folder, readonly=True)
        client.search(["ALL"])
        started = time.perf_counter()
        client.search(["ALL"])
        return (time.perf_counter() - started) * 1000


def seed_exports(
    config_root: Path, env_config: object, count: int, sim: PinpointeSimulator
) -> list[str]:
    """Submit *count* exports through the real client; return their job IDs."""
    from inbox_poller.config import Config

    assert isinstance(env_config, Config)
    store = Store(env_config.state_path)
    try:
        submitter = build_submitter(env_config, store)
        jobs = []
        started = time.perf_counter()
        for number in range(count):
            export = submitter.submit(
                ExportRequest(stat=STAT, startdate="20261101", enddate="20261102")
            )
            assert export.job_id is not None
            jobs.append(export.job_id)
            if (number + 1) % 1000 == 0:
                print(f"  submitted {number + 1}/{count}", file=sys.stderr)
        print(f"  submitted {count} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    finally:
        store.close()
    return jobs


def deliver_all(
    sim: PinpointeSimulator, dovecot: DovecotServer, folder: str, jobs: Sequence[str]
) -> float:
    """Render every job's notification and MULTIAPPEND them; return the seconds it took."""
    mails: list[bytes] = []
    sim.deliver = mails.append
    for job_id in jobs:
        sim.job(job_id).wait_ready(120)
        sim.deliver_notification(job_id)
    started = time.perf_counter()
    with dovecot.client() as client:
        for first in range(0, len(mails), MULTIAPPEND_BATCH):
            client.multiappend(folder, mails[first : first + MULTIAPPEND_BATCH])
    return time.perf_counter() - started


@dataclass
class Result:
    count: int
    seconds: float
    archived: int
    manifest_lines: int
    left_in_folder: int
    search_ms: float
    halves_s: tuple[float, float] = (0.0, 0.0)
    """Seconds from the start to the middle archived export, and from there to the last
    (from the run's log): equal halves mean a steady rate, a longer second half a cost
    that grows with what is done already."""
    child_cpu_s: float = 0.0
    """CPU (user + system) of the ``run --once`` process."""
    server_cpu_s: float = 0.0
    """CPU of this process meanwhile: the simulator serving the payloads."""
    machine: tuple[float, float] = (0.0, 0.0)
    """CPU seconds every process of the machine used meanwhile (the run, its mail reader,
    the simulator, Dovecot), and the share of the machine's CPUs that is (busy %)."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def run_once(
    config_path: Path, cwd: Path, profile: Path | None = None, code: Path = REPO_ROOT
) -> float:
    """Run ``inbox-poller -c CONFIG run --once`` as a child; return its wall time.

    Its log goes to ``run-once.err`` in *cwd*. With *profile*, the child runs under
    cProfile in every thread (``profile_threads.py``) and writes their merged statistics
    there. The child imports ``inbox_poller`` from *code* (``--root``: another tree, for a
    before/after run), from the bytecode ``main`` compiled (``compile_tree``), in the
    environment ``bench_cli_startup.environment`` makes. A tree unpacked by ``git archive``
    has no bytecode, and this VM's shell forbids writing it and names a CA bundle
    (``$SSL_CERT_FILE``) that each TLS context would parse; an installed daemon on a stock
    machine has its bytecode and no such variable.
    """
    compile_tree(code)  # once per tree (cached), before the timing; bench_first_pass too
    environ = environment(code)
    profiler = [str(BENCH_DIR / "profile_threads.py"), str(profile)] if profile else []
    log = cwd / "run-once.err"
    with log.open("wb") as stderr:
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                *profiler,
                "-m",
                "inbox_poller",
                "-c",
                str(config_path),
                "run",
                "--once",
            ],
            cwd=cwd,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if done.returncode != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(lines[-15:])
        raise BenchError(f"run --once exited {done.returncode}:\n{tail}")
    return elapsed


def halves(log: Path, elapsed: float) -> tuple[float, float]:
    """Split the run at its middle archived export (by the log's timestamps)."""
    stamps = [
        datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
        for line in log.read_text(encoding="utf-8").splitlines()
        if ": archived " in line
    ]
    if len(stamps) < 2:
        return (elapsed, 0.0)
    middle, last = stamps[len(stamps) // 2], stamps[-1]
    second = (last - middle).total_seconds()
    return (elapsed - second, second)


def measure_count(
    root: Path,
    servers: Path,
    dovecot: DovecotServer,
    count: int,
    payload_bytes: int,
    profile: Path | None,
    workers: int | None = None,
    imap_rtt_ms: float = 0.0,
    code: Path = REPO_ROOT,
) -> Result:
    folder = f"backlog-{count}"
    with ExitStack() as stack:
        sim = stack.enter_context(
            PinpointeSimulator(servers / f"sim-{count}", payload_bytes=payload_bytes)
        )
        sim.send_notifications = False
        env = make_env(root / folder, dovecot, sim, folder)
        if workers is not None:
            with env.config_path.open("a", encoding="utf-8") as config_file:
                config_file.write(f"\n[daemon]\ndownload_workers = {workers}\n")
        if imap_rtt_ms:
            link = stack.enter_context(DelayedLink(dovecot.imaps_port, imap_rtt_ms / 2000))
            text = env.config_path.read_text(encoding="utf-8")
            port_line = f"\nport = {dovecot.imaps_port}\n"
            if text.count(port_line) != 1:
                raise BenchError("cannot find the [imap] port in the config")
            env.config_path.write_text(
                text.replace(port_line, f"\nport = {link.port}\n"), encoding="utf-8"
            )
        config = env.config()
        print(f"backlog of {count}:", file=sys.stderr)
        jobs = seed_exports(env.root, config, count, sim)
        seconds = deliver_all(sim, dovecot, folder, jobs)
        print(f"  appended {count} notifications in {seconds:.1f}s", file=sys.stderr)
        search = search_ms(dovecot, folder)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        ticks = machine_ticks()
        elapsed = run_once(env.config_path, env.root, profile, code)
        machine = machine_busy(ticks, machine_ticks())
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_after = resource.getrusage(resource.RUSAGE_SELF)
        child_cpu = (children_after.ru_utime - children.ru_utime) + (
            children_after.ru_stime - children.ru_stime
        )
        server_cpu = (own_after.ru_utime - own.ru_utime) + (own_after.ru_stime - own.ru_stime)
        print(f"  run --once: {elapsed:.1f}s", file=sys.stderr)
        store = Store(config.state_path)
        try:
            counts = store.counts_by_state()
        finally:
            store.close()
        acknowledged = counts.get(ExportState.ACKNOWLEDGED.value, 0)
        if acknowledged != count:
            raise BenchError(f"{count} exports, {acknowledged} acknowledged: {counts}")
        manifest = env.archive_dir / "manifest.jsonl"
        lines = len(manifest.read_text(encoding="utf-8").splitlines())
        result = Result(
            count,
            elapsed,
            len(env.archived_files()),
            lines,
            len(env.messages()),
            search,
            halves(env.root / "run-once.err", elapsed),
            child_cpu,
            server_cpu,
            machine,
        )
        if result.archived != count or lines != count or result.left_in_folder:
            raise BenchError(f"the run did not archive exactly once: {result}")
        shutil.rmtree(env.archive_dir, ignore_errors=True)  # 100 KB x count
        shutil.rmtree(sim.directory / "payloads", ignore_errors=True)
        dovecot.delete_folder(folder)
        dovecot.delete_folder(env.processed)
        return result


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every CPU so far, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(field) for field in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]  # guest is in user
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal


def machine_busy(before: tuple[int, int], after: tuple[int, int]) -> tuple[float, float]:
    """CPU seconds every process used between two ``machine_ticks``, and the busy share."""
    busy, everything = after[0] - before[0], after[1] - before[1]
    return busy / os.sysconf("SC_CLK_TCK"), 100 * busy / max(everything, 1)


def report(results: Sequence[Result], fsyncs: float, payloads: float) -> str:
    rows = [
        [
            f"{r.count:,}",
            f"{r.seconds:.1f}",
            f"{r.rate:.0f}",
            f"{r.seconds / r.count * 1000:.2f}",
            f"{r.halves_s[0]:.1f} / {r.halves_s[1]:.1f}",
            f"{r.child_cpu_s / r.count * 1000:.1f}",
            f"{r.server_cpu_s / r.count * 1000:.1f}",
            f"{r.machine[0] / r.count * 1000:.1f}",
            f"{r.machine[1]:.0f} %",
            f"{r.search_ms:.1f}",
        ]
        for r in results
    ]
    headers = [
        "backlog",
        "run --once s",
        "exports/s",
        "ms per export",
        "first / second half s",
        "CPU ms per export (run --once)",
        "CPU ms per export (simulator)",
        "CPU ms per export (every process)",
        "machine busy",
        "one UID SEARCH ALL ms",
    ]
    lines = [
        markdown_table(headers, rows),
        "",
        f"anchor: {fsyncs:.0f} fsyncs/s of a small file; {payloads:.0f} payloads/s made durable"
        " by one thread (create, write, fsync, rename, fsync the directory)",
    ]
    first = results[0]
    verdict = "met" if first.rate >= TARGET_RATE else "MISSED"
    lines.append(f"target >= {TARGET_RATE:g} exports/s at {first.count:,}: {verdict}")
    if len(results) > 1:
        ratio = results[1].seconds / first.seconds
        scale = results[1].count / first.count
        verdict = "met" if ratio <= TARGET_SCALING * scale / 10 else "MISSED"
        lines.append(
            f"{results[1].count:,} took {ratio:.2f}x the time of {first.count:,}"
            f" (target <= {TARGET_SCALING * scale / 10:g}x): {verdict}"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--counts",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1000, 10_000],
        help="backlog sizes, comma-separated (default 1000,10000)",
    )
    parser.add_argument("--payload-bytes", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument(
        "--servers-dir",
        type=Path,
        default=SHARED_MEMORY if SHARED_MEMORY.is_dir() else None,
        help="parent of Dovecot's and the simulator's files (default: /dev/shm if there is"
        " one, else the system's temporary directory)",
    )
    parser.add_argument(
        "--profile", type=Path, help="run the child under cProfile (every thread), to FILE"
    )
    parser.add_argument(
        "--workers", type=int, help="[daemon] download_workers (default: the config's, 2)"
    )
    parser.add_argument(
        "--imap-rtt-ms",
        type=float,
        default=0.0,
        help="put this round trip between run --once and Dovecot (delaylink.DelayedLink)",
    )
    parser.add_argument(
        "--root", type=Path, help="run run --once with inbox_poller imported from this tree"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-backlog-", dir=args.workdir))
    try:
        with ExitStack() as stack:
            servers = Path(tempfile.mkdtemp(prefix="ip-bench-servers-", dir=args.servers_dir))
            stack.callback(shutil.rmtree, servers, ignore_errors=True)
            servers.chmod(0o711)  # Dovecot's mail user passes through it (mkdtemp makes 0700)
            dovecot = start_dovecot(directory=servers / "dovecot")
            stack.callback(dovecot.cleanup)
            results = [
                measure_count(
                    root,
                    servers,
                    dovecot,
                    n,
                    args.payload_bytes,
                    args.profile,
                    args.workers,
                    args.imap_rtt_ms,
                    args.root.resolve() if args.root else REPO_ROOT,
                )
                for n in args.counts
            ]
            fsyncs = fsync_rate(root / "probe")
            payloads = payload_rate(root / "payload-probe", args.payload_bytes)
    except (BenchError, InboxPollerError) as exc:
        print(f"bench_backlog: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_backlog: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report(results, fsyncs, payloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
