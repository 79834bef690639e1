"""Benchmark: what the daemon costs while it waits, with no mail, for ``--seconds`` (300).

Starts a private Dovecot (IDLE advertised), the Pinpointe simulator and
``inbox-poller -c CONFIG run`` as a child process, with a notify socket and a
watchdog of 120 s as under the shipped unit (``bench_latency.running_daemon``). Once the daemon
says READY=1 it is left alone and sampled every second from ``/proc/<pid>``:
``VmRSS`` of ``status`` and ``utime + stime`` of ``stat``. What it does meanwhile:
an IDLE renewed every 5 s and a watchdog ping after each renewal, STATUS= every
10 s, a mailbox pass every ``poll_interval`` (60 s) and the scheduler's reconcile
every 60 s.

Run from the repository root: ``python3 bench/bench_idle.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports, so the script runs as
# ``python3 bench/bench_idle.py`` without PYTHONPATH)

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# bench/ has no __init__.py: bench_latency is imported as a top-level module (as mypy
# names it); the repository root is for inbox_poller and tests
for _path in (BENCH_DIR.parent, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_latency import (
    SAMPLE_TIMEOUT_S,
    Appender,
    BenchError,
    log_problems,
    loop_bed,
    markdown_table,
    running_daemon,
    submit,
    wait_archived,
    wait_state,
)

from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcSample:
    """One look at the process: seconds since READY, resident bytes, CPU seconds."""

    at_s: float
    rss: int
    cpu_s: float
    threads: int


def _status_fields(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    return {
        key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
    }


def _kib(value: str) -> int:
    number, _, unit = value.partition(" ")
    if unit.strip() != "kB":
        raise BenchError(f"unexpected unit in /proc status: {value!r}")
    return int(number) * 1024


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time *pid* has used (all its threads)."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    # the command name is in parentheses and may contain spaces: split after it
    fields = text.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
    return (utime + stime) / CLOCK_TICKS


def sample(pid: int, since: float) -> ProcSample:
    status = _status_fields(pid)
    return ProcSample(
        at_s=time.monotonic() - since,
        rss=_kib(status["VmRSS"]),
        cpu_s=cpu_seconds(pid),
        threads=int(status["Threads"]),
    )


def peak_rss(pid: int) -> int:
    """The kernel's own high-water mark of resident memory (``VmHWM``)."""
    return _kib(_status_fields(pid)["VmHWM"])


@dataclass
class IdleRun:
    samples: list[ProcSample]
    startup_cpu_s: float
    """CPU used from exec to READY=1 (imports, config, ledger, first session)."""
    startup_s: float
    hwm: int
    log: str


def watch(pid: int, seconds: float, interval_s: float) -> list[ProcSample]:
    """Sample *pid* every *interval_s* (on a fixed schedule, no drift) for *seconds*."""
    started = time.monotonic()
    samples = [sample(pid, started)]
    step = 1
    while samples[-1].at_s < seconds:
        time.sleep(max(0.0, started + step * interval_s - time.monotonic()))
        samples.append(sample(pid, started))
        step += 1
    return samples


def measure(args: argparse.Namespace, root: Path) -> IdleRun:
    with loop_bed(root, poll_interval_s=args.poll_interval) as env:
        store = Store(env.config().state_path)
        appender = Appender(env.dovecot, env.folder)
        env.sim.deliver = appender.append
        launched = time.monotonic()
        with running_daemon(env) as daemon:
            ready_at = time.monotonic()
            pid = daemon.process.pid
            startup_cpu = cpu_seconds(pid)
            # work first, when asked: the idle that follows is the one a running daemon
            # has between exports (every library it uses loaded, its download threads made)
            for _ in range(args.after_exports):
                sample = submit(env, store)
                env.sim.deliver_notification(sample.job_id)
                sample.appended_at = appender.returned_at
                wait_archived([sample], store, SAMPLE_TIMEOUT_S, daemon.log)
                wait_state(store, sample.job_id, ExportState.ACKNOWLEDGED, SAMPLE_TIMEOUT_S)
            appender.close()
            store.close()
            print(f"daemon ready (pid {pid}); sampling for {args.seconds}s", file=sys.stderr)
            samples = watch(pid, args.seconds, args.interval)
            hwm = peak_rss(pid)
            if daemon.process.poll() is not None:
                raise BenchError("the daemon exited during the measurement")
            log = daemon.log()
    return IdleRun(samples, startup_cpu, ready_at - launched, hwm, log)


# ---- reporting ----------------------------------------------------------------------------


def _mib(value: int) -> str:
    return f"{value / MIB:.1f}"


def report(run: IdleRun, args: argparse.Namespace) -> str:
    first, last = run.samples[0], run.samples[-1]
    wall = last.at_s - first.at_s
    cpu = last.cpu_s - first.cpu_s
    peak = max(s.rss for s in run.samples)
    errors, warnings = log_problems(run.log)
    summary = [
        ["measured for", f"{wall:.0f} s ({len(run.samples)} samples)"],
        ["RSS when sampling starts", f"{_mib(first.rss)} MiB"],
        ["RSS peak (sampled / VmHWM)", f"{_mib(peak)} / {_mib(run.hwm)} MiB"],
        ["RSS at end", f"{_mib(last.rss)} MiB"],
        ["CPU while idle", f"{cpu:.2f} s"],
        ["average CPU", f"{100 * cpu / wall:.3f} % of one core"],
        ["start-up to READY", f"{run.startup_s:.2f} s wall, {run.startup_cpu_s:.2f} s CPU"],
        ["threads", f"{first.threads} at start, {last.threads} at end"],
        ["daemon log", f"{errors} error and {warnings} warning line(s)"],
    ]
    lines = [
        "Daemon idle, no mail (Dovecot with IDLE; IDLE renewed every 5 s; "
        f"poll_interval {args.poll_interval} s)"
        + (
            f", after archiving {args.after_exports} export(s) of 100 records"
            if args.after_exports
            else ", from its start"
        ),
        "",
        markdown_table(["", "value"], summary),
        "",
        markdown_table(["window", "RSS at end MiB", "CPU s", "CPU %"], _windows(run.samples)),
    ]
    return "\n".join(lines)


def _windows(samples: Sequence[ProcSample], width_s: float = 60.0) -> list[list[str]]:
    """One row per *width_s* window: RSS at its end and the CPU it used."""
    rows = []
    start = samples[0]
    for current in samples[1:]:
        if current.at_s - start.at_s >= width_s - 0.5 or current is samples[-1]:
            span = current.at_s - start.at_s
            cpu = current.cpu_s - start.cpu_s
            rows.append(
                [
                    f"{start.at_s:.0f}-{current.at_s:.0f} s",
                    _mib(current.rss),
                    f"{cpu:.2f}",
                    f"{100 * cpu / span:.3f}" if span > 0 else "-",
                ]
            )
            start = current
    return rows


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not positive")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=_positive, default=300.0, help="how long to watch")
    parser.add_argument("--interval", type=_positive, default=1.0, help="seconds between looks")
    parser.add_argument(
        "--poll-interval", type=int, default=60, help="the daemon's imap.poll_interval"
    )
    parser.add_argument(
        "--after-exports",
        type=int,
        default=0,
        help="archive this many exports (submit, notification, download) before the idle "
        "window; RSS at start is then measured after them",
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.poll_interval < 5:
        print("bench_idle: error: --poll-interval must be at least 5", file=sys.stderr)
        return 2
    # the daemon's environment as under the shipped unit: this VM's shell names the CA
    # bundle in $SSL_CERT_FILE, which keeps net.client_context parsing it into each context
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        os.environ.pop(name, None)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-idle-", dir=args.workdir))
    try:
        run = measure(args, root)
    except (BenchError, InboxPollerError, OSError) as exc:
        print(f"bench_idle: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_idle: interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report(run, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
