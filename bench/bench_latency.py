"""Benchmark: notification latency, from the APPEND of the mail to the archived file.

Everything is real and on loopback: a private Dovecot (``sandbox.dovecot.server``), the Pinpointe
simulator (``sandbox.simulator.server``) and ``inbox-poller -c CONFIG run`` as a
child process with a generated config (``tests.plugins.loop.LoopEnv``). Exports are
submitted with ``inbox-poller submit``; the simulator sends no mail by itself: the
benchmark APPENDs each notification (the simulator's own rendering, through its
``deliver`` callback) and measures

    t0 = the moment APPEND returned (tagged OK, so the mail is in the folder);
    t1 = the moment the archived payload file exists (checked every 5 ms),

and, on the way, when the ledger first shows the export past ``submitted`` (the mail
was read and matched). Modes (``--modes``):

* ``floor``: Dovecot alone, APPEND on one connection, EXISTS on another that idles:
  the fixed ~500 ms IDLE delay (``NOTIFY_DELAY_MSECS``) every IDLE figure includes;
* ``idle``: the daemon with IDLE (``--samples``, default 20), a random pause before
  each APPEND so the mail lands at any point of the 5 s IDLE renewal cycle;
* ``timer``: polling every ``--poll-interval`` s (60) with no push at all: one
  ``run --once`` per tick, as a cron job or systemd timer would run it. The
  ``--poll-samples`` mails (6) are appended at evenly spread phases of one tick
  interval, so one interval gives the whole distribution;
* ``noidle``: the daemon against a Dovecot that hides IDLE, ``poll_interval`` 60 s.
  The watcher then sends a NOOP every 5 s (its IDLE renewal period), which reports
  the new mail: this is what a server without IDLE gets, not 60 s polling.

Run from the repository root: ``python3 bench/bench_latency.py`` (see bench/README.md).
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports, so the
# script runs as ``python3 bench/bench_latency.py`` or ``python -m bench.bench_latency``
# without PYTHONPATH)

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cli_startup import compile_tree, environment
from imapclient import IMAPClient

from inbox_poller.archive import Archive
from inbox_poller.errors import InboxPollerError
from inbox_poller.ledger.store import Store
from inbox_poller.models import ExportState
from inbox_poller.sandbox.dovecot.server import DovecotServer
from inbox_poller.sandbox.simulator.server import PinpointeSimulator
from inbox_poller.service.watcher import IDLE_RENEW_S
from tests.plugins.daemon import DaemonProcess, NotifySocket
from tests.plugins.loop import LoopEnv, prepare_loop_env

UNIT_WATCHDOG_USEC = 120_000_000
"""WatchdogSec=120s, as the shipped unit: the benchmarks measure the daemon as installed."""

FOLDER = "Notifications"
FLOOR_FOLDER = "floor"
STAT = "4242"
WATCH_STEP_S = 0.005
"""How often the archive directory is looked at: the resolution of every figure."""
DOVECOT_NOTIFY_DELAY_S = 0.5
"""Dovecot's hard-coded IDLE notification delay (NOTIFY_DELAY_MSECS, docs/dovecot.md)."""
SAMPLE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
TARGET_MEDIAN_S = 1.0
TARGET_P95_S = 2.0
WAITING = (ExportState.SUBMITTING, ExportState.SUBMITTED, ExportState.SUBMIT_UNKNOWN)


class BenchError(RuntimeError):
    """The benchmark could not measure what it was asked to (the message says why)."""


# ---- small helpers shared by the other benchmarks --------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Return the *q*-th percentile (0-100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return a Markdown table, the first column left-aligned and the others right-aligned."""
    widths = [max(3, len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    align = ["-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(headers), "| " + " | ".join(align) + " |", *map(line, rows)])


def start_dovecot(*, hide_idle: bool = False, directory: Path | None = None) -> DovecotServer:
    """Start a private Dovecot (in *directory*, an empty one, if given; else in the system's
    temporary directory); with *hide_idle*, IDLE is left out of CAPABILITY."""
    if not hide_idle:
        server = DovecotServer(directory)
        server.start()
        return server
    # imap_capability replaces the whole list: read the default one from a first server
    with DovecotServer() as probe:
        shown = " ".join(cap for cap in probe.capabilities() if cap.upper() != "IDLE")
    server = DovecotServer(directory, capability=shown)
    server.start()
    if "IDLE" in server.capabilities():
        server.cleanup()
        raise BenchError("Dovecot still advertises IDLE after imap_capability was set")
    return server


def make_env(
    root: Path,
    dovecot: DovecotServer,
    sim: PinpointeSimulator,
    folder: str,
    *,
    poll_interval_s: int = 60,
) -> LoopEnv:
    """Create *folder* and its processed folder; write the secrets and the config under *root*."""
    dovecot.create_folder(folder)
    return prepare_loop_env(
        root, dovecot, folder, sim, imap_extra=f"poll_interval = {poll_interval_s}"
    )


@contextmanager
def loop_bed(
    root: Path, *, hide_idle: bool = False, poll_interval_s: int = 60, records: int = 100
) -> Iterator[LoopEnv]:
    """Yield a configured LoopEnv: Dovecot, a silent simulator, folders, secrets, config.

    The simulator sends no mail (``send_notifications = False``); whoever sets
    ``env.sim.deliver`` decides where and when its notification goes. Everything is
    stopped at the end.
    """
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        dovecot = start_dovecot(hide_idle=hide_idle)
        stack.callback(dovecot.cleanup)
        sim = stack.enter_context(PinpointeSimulator(root / "sim", payload_records=records))
        sim.send_notifications = False
        yield make_env(root, dovecot, sim, FOLDER, poll_interval_s=poll_interval_s)


class _NotifyDrain:
    """The daemon's sd_notify socket; ``NotifySocket`` reads it as it comes, so the
    daemon's sends never wait."""

    def __init__(self, path: Path) -> None:
        self.socket = NotifySocket(path)

    def seen(self, text: str) -> bool:
        return any(text in message for message in list(self.socket.messages))

    def close(self) -> None:
        self.socket.close()


@contextmanager
def running_daemon(env: LoopEnv) -> Iterator[DaemonProcess]:
    """Start ``inbox-poller run`` (with a notify socket and a watchdog, as under systemd),
    wait for READY=1, yield it, and stop it with SIGTERM at the end."""
    drain = _NotifyDrain(env.root / f"notify-{time.monotonic_ns()}.sock")
    daemon = DaemonProcess(env, drain.socket, watchdog_usec=UNIT_WATCHDOG_USEC)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not drain.seen("READY=1"):
            if daemon.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the daemon did not become ready:\n{_tail(daemon.log())}")
            time.sleep(0.02)
        yield daemon
    finally:
        if daemon.process.poll() is None:
            daemon.signal(signal.SIGTERM)
            # a daemon that ignores SIGTERM is killed just below
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(STOP_TIMEOUT_S)
        daemon.kill()
        drain.close()


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


def log_problems(log: str) -> tuple[int, int]:
    """Count the error and warning lines of a daemon log (journald ``<N>`` prefixes)."""
    lines = log.splitlines()
    errors = sum(1 for line in lines if line[:3] in ("<2>", "<3>") or "Traceback" in line)
    warnings = sum(1 for line in lines if line.startswith("<4>"))
    return errors, warnings


# ---- measuring ----------------------------------------------------------------------------


@dataclass
class Sample:
    """One notification's way through the daemon; times are ``time.monotonic()``."""

    job_id: str
    target: Path
    appended_at: float | None = None
    notified_at: float | None = None
    archived_at: float | None = None

    @property
    def latency_s(self) -> float:
        assert self.appended_at is not None and self.archived_at is not None
        return self.archived_at - self.appended_at

    @property
    def detect_s(self) -> float:
        """APPEND returned -> the ledger shows the mail matched (read by a pass)."""
        assert self.appended_at is not None
        notified = self.notified_at if self.notified_at is not None else self.archived_at
        assert notified is not None
        return notified - self.appended_at


class Appender:
    """One logged-in IMAP session that APPENDs mail and notes when each APPEND returned."""

    def __init__(self, dovecot: DovecotServer, folder: str) -> None:
        self._client = dovecot.client()
        self._folder = folder
        self.returned_at = 0.0

    def append(self, raw: bytes) -> None:
        self._client.append(self._folder, raw)
        self.returned_at = time.monotonic()  # t0: the tagged OK is in, the mail is there

    def close(self) -> None:
        try:
            self._client.logout()
        except Exception:  # a bench teardown: the server may already be gone
            self._client.shutdown()


def submit(env: LoopEnv, store: Store) -> Sample:
    """Submit one export with the real CLI; return its sample with the expected file path."""
    result = env.cli("submit", "--stat", STAT, "--start", "20261101", "--end", "20261102")
    if result.returncode != 0:
        raise BenchError(f"inbox-poller submit failed:\n{_tail(result.stderr)}")
    job_id = result.stdout.strip()
    export = store.export_by_job_id(job_id)
    if export is None:
        raise BenchError(f"job {job_id} is not in the ledger after submit")
    env.sim.job(job_id).wait_ready(30)
    target = env.archive_dir / Archive(env.archive_dir).relative_path(export)
    return Sample(job_id, target)


def _observe(samples: Sequence[Sample], store: Store, now: float) -> None:
    """Note what happened to the appended samples since the last look."""
    open_ = [s for s in samples if s.appended_at is not None and s.archived_at is None]
    if any(s.notified_at is None for s in open_):
        states = {e.job_id: e.state for e in store.list_exports()}
        for sample in open_:
            if sample.notified_at is None and states.get(sample.job_id) not in WAITING:
                sample.notified_at = now
    for sample in open_:
        if sample.target.exists():
            sample.archived_at = now


def wait_archived(
    samples: Sequence[Sample], store: Store, timeout_s: float, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while any(s.archived_at is None for s in samples):
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"no archived file after {timeout_s}s; daemon log:\n{_tail(log())}")
        _observe(samples, store, now)
        time.sleep(WATCH_STEP_S)


def wait_state(store: Store, job_id: str, wanted: ExportState, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        export = store.export_by_job_id(job_id)
        if export is not None and export.state is wanted:
            return
        time.sleep(0.05)
    raise BenchError(f"job {job_id} did not reach {wanted.value} within {timeout_s}s")


def daemon_samples(
    env: LoopEnv, count: int, rng: random.Random, progress: Callable[[str], None]
) -> tuple[list[Sample], str]:
    """Run the daemon and time *count* notifications one after another; return its log."""
    store = Store(env.config().state_path)
    appender = Appender(env.dovecot, env.folder)
    env.sim.deliver = appender.append
    samples: list[Sample] = []
    try:
        with running_daemon(env) as daemon:
            for number in range(1, count + 1):
                sample = submit(env, store)
                # a random phase against the IDLE renewal (or NOOP) cycle of the watcher
                time.sleep(rng.uniform(0.2, 0.2 + IDLE_RENEW_S))
                env.sim.deliver_notification(sample.job_id)
                sample.appended_at = appender.returned_at
                wait_archived([sample], store, SAMPLE_TIMEOUT_S, daemon.log)
                # the next sample starts from a quiet daemon: mail acknowledged, pass over
                wait_state(store, sample.job_id, ExportState.ACKNOWLEDGED, SAMPLE_TIMEOUT_S)
                samples.append(sample)
                progress(f"  {number}/{count}: {sample.latency_s:.3f}s")
        log = daemon.log()
    finally:
        appender.close()
        store.close()
    return samples, log


def timer_samples(
    env: LoopEnv, count: int, interval_s: float, progress: Callable[[str], None]
) -> tuple[list[Sample], list[float]]:
    """Poll with ``run --once`` every *interval_s*; APPEND *count* mails at spread phases.

    Returns the samples and the wall time of each ``run --once`` that found mail.
    """
    store = Store(env.config().state_path)
    appender = Appender(env.dovecot, env.folder)
    env.sim.deliver = appender.append
    samples = [submit(env, store) for _ in range(count)]
    runs: list[_Run] = []
    try:
        tick0 = time.monotonic()
        runs.append(_Run(env, 0))  # the tick before the mail arrives
        # evenly spread phases: the sample is the arrival distribution itself
        due = [(tick0 + (k + 0.5) / count * interval_s, s) for k, s in enumerate(samples)]
        deadline = tick0 + interval_s + SAMPLE_TIMEOUT_S
        next_tick = tick0 + interval_s
        while any(s.archived_at is None for s in samples):
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"timer mode: not every payload archived by {deadline - tick0}s")
            for at, sample in due:
                if sample.appended_at is None and now >= at:
                    env.sim.deliver_notification(sample.job_id)
                    sample.appended_at = appender.returned_at
                    progress(f"  appended job {sample.job_id} at +{now - tick0:.1f}s")
            if now >= next_tick and all(run.done() for run in runs):
                runs.append(_Run(env, len(runs)))
                next_tick += interval_s
            _observe(samples, store, time.monotonic())
            time.sleep(WATCH_STEP_S)
        for run in runs:
            run.finish()
    finally:
        for run in runs:
            run.kill()
        appender.close()
        store.close()
    return samples, [run.seconds for run in runs if run.archived_any]


class _Run:
    """One ``inbox-poller -c CONFIG run --once`` started in the background (as by a timer)."""

    def __init__(self, env: LoopEnv, number: int) -> None:
        environ = environment(REPO_ROOT)  # as installed: see bench_cli_startup
        self._out = env.root / f"run-once-{number}.out"
        self._err = env.root / f"run-once-{number}.err"
        self.started = time.monotonic()
        self.ended: float | None = None
        with self._out.open("w") as out, self._err.open("w") as err:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "inbox_poller", "-c", str(env.config_path), "run", "--once"],
                cwd=env.root,
                env=environ,
                stdout=out,
                stderr=err,
            )

    def done(self) -> bool:
        if self.ended is None and self._process.poll() is not None:
            self.ended = time.monotonic()
        return self.ended is not None

    def finish(self) -> None:
        """Wait for the run; raise if it failed."""
        self._process.wait(timeout=SAMPLE_TIMEOUT_S)
        self.done()
        if self._process.returncode != 0:
            raise BenchError(
                f"run --once exited {self._process.returncode}:\n"
                f"{_tail(self._err.read_text(encoding='utf-8'))}"
            )

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    @property
    def archived_any(self) -> bool:
        out = self._out.read_text(encoding="utf-8")
        return "archived job" in out

    @property
    def seconds(self) -> float:
        assert self.ended is not None
        return self.ended - self.started


def idle_floor(dovecot: DovecotServer, count: int, rng: random.Random) -> list[float]:
    """Time APPEND returned -> EXISTS on a second connection in IDLE, *count* times."""
    dovecot.create_folder(FLOOR_FOLDER)
    watcher: IMAPClient = dovecot.client()
    appender = Appender(dovecot, FLOOR_FOLDER)
    raw = b"From: a@example.com\r\nSubject: floor\r\n\r\nx\r\n"
    delays: list[float] = []
    try:
        watcher.select_folder(FLOOR_FOLDER)
        for _ in range(count):
            watcher.idle()
            time.sleep(rng.uniform(0.5, 1.0))  # let earlier changes settle
            appender.append(raw)
            seen = _wait_exists(watcher, SAMPLE_TIMEOUT_S)
            delays.append(seen - appender.returned_at)
            watcher.idle_done()
    finally:
        appender.close()
        watcher.logout()
    return delays


def _wait_exists(client: IMAPClient, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for response in client.idle_check(timeout=WATCH_STEP_S):
            if isinstance(response, tuple) and len(response) > 1 and response[1] == b"EXISTS":
                return time.monotonic()
    raise BenchError(f"no EXISTS within {timeout_s}s of the APPEND")


# ---- reporting ----------------------------------------------------------------------------


def _row(name: str, values: Sequence[float], detect: Sequence[float] | None) -> list[str]:
    def s(value: float) -> str:
        return f"{value:.3f}"

    return [
        name,
        str(len(values)),
        s(min(values)),
        s(statistics.median(values)),
        s(percentile(values, 95)),
        s(max(values)),
        s(statistics.median(detect)) if detect else "-",
    ]


def _verdict(values: Sequence[float]) -> str:
    median, p95 = statistics.median(values), percentile(values, 95)
    ok = median <= TARGET_MEDIAN_S and p95 <= TARGET_P95_S
    return (
        f"target (median <= {TARGET_MEDIAN_S:g} s, p95 <= {TARGET_P95_S:g} s): "
        f"{'met' if ok else 'MISSED'} (median {median:.3f} s, p95 {p95:.3f} s)"
    )


@dataclass
class Results:
    floor: list[float] | None = None
    idle: list[Sample] | None = None
    idle_log: str = ""
    timer: list[Sample] | None = None
    timer_runs: list[float] | None = None
    noidle: list[Sample] | None = None
    noidle_log: str = ""


def report(results: Results, args: argparse.Namespace) -> str:
    rows: list[list[str]] = []
    if results.floor:
        rows.append(_row("Dovecot alone: APPEND -> EXISTS in IDLE", results.floor, None))
    if results.idle:
        rows.append(_mode_row("daemon, IDLE", results.idle))
    if results.timer:
        rows.append(_mode_row(f"run --once every {args.poll_interval:g} s", results.timer))
    if results.noidle:
        rows.append(_mode_row("daemon, server without IDLE", results.noidle))
    headers = ["mode", "n", "min s", "median s", "p95 s", "max s", "APPEND -> matched, median s"]
    lines = [
        "Notification latency: APPEND returned -> archived file exists "
        f"(checked every {WATCH_STEP_S * 1000:g} ms); payload {args.records} records",
        "",
        markdown_table(headers, rows),
        "",
        f"Dovecot's IDLE floor: {DOVECOT_NOTIFY_DELAY_S * 1000:g} ms (NOTIFY_DELAY_MSECS)"
        + (
            f"; measured here {statistics.median(results.floor) * 1000:.0f} ms median"
            if results.floor
            else ""
        ),
    ]
    if results.idle:
        lines.append("daemon, IDLE: " + _verdict([s.latency_s for s in results.idle]))
        lines.append(_problems("daemon, IDLE", results.idle_log))
    if results.timer:
        interval = args.poll_interval
        runs = results.timer_runs or []
        lines.append(
            f"polling every {interval:g} s, uniform arrival: expected median ~{interval / 2:g} s, "
            f"p95 ~{interval * 0.95:g} s, plus the pass; "
            f"the run --once that found the mail took {', '.join(f'{r:.2f}' for r in runs)} s "
            "(process start included; the payloads download one after another)"
        )
    if results.noidle:
        lines.append(
            f"server without IDLE: the watcher NOOPs every {IDLE_RENEW_S:g} s: expected median "
            f"~{IDLE_RENEW_S / 2:g} s, p95 ~{IDLE_RENEW_S * 0.95:g} s, plus the pass"
        )
        lines.append(_problems("daemon, no IDLE", results.noidle_log))
    return "\n".join(lines)


def _mode_row(name: str, samples: Sequence[Sample]) -> list[str]:
    return _row(name, [s.latency_s for s in samples], [s.detect_s for s in samples])


def _problems(name: str, log: str) -> str:
    errors, warnings = log_problems(log)
    return f"{name}: daemon log had {errors} error and {warnings} warning line(s)"


# ---- main ---------------------------------------------------------------------------------

MODES = ("floor", "idle", "timer", "noidle")


def _modes(value: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [mode for mode in chosen if mode not in MODES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"modes are a comma list of {', '.join(MODES)}")
    return chosen


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--modes", type=_modes, default=MODES, help="comma list (default: all)")
    parser.add_argument("--samples", type=positive_int, default=20, help="floor and IDLE samples")
    parser.add_argument(
        "--poll-samples", type=positive_int, default=6, help="timer and no-IDLE samples"
    )
    parser.add_argument(
        "--poll-interval", type=positive_int, default=60, help="seconds between polls"
    )
    parser.add_argument("--records", type=positive_int, default=100, help="payload records")
    parser.add_argument("--seed", type=int, default=1, help="seed for the random pauses")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the results")
    return parser


def measure(args: argparse.Namespace, root: Path) -> Results:
    rng = random.Random(args.seed)
    results = Results()

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    if {"floor", "idle", "timer"} & set(args.modes):
        with loop_bed(
            root / "idle", poll_interval_s=args.poll_interval, records=args.records
        ) as env:
            if "floor" in args.modes:
                progress(f"floor: {args.samples} APPENDs seen by an idling connection")
                results.floor = idle_floor(env.dovecot, args.samples, rng)
            if "idle" in args.modes:
                progress(f"idle: {args.samples} notifications to the daemon")
                results.idle, results.idle_log = daemon_samples(env, args.samples, rng, progress)
            if "timer" in args.modes:
                compile_tree(REPO_ROOT)  # the runs read their bytecode, as installed
                progress(f"timer: {args.poll_samples} mails over one {args.poll_interval} s tick")
                results.timer, results.timer_runs = timer_samples(
                    env, args.poll_samples, args.poll_interval, progress
                )
    if "noidle" in args.modes:
        with loop_bed(
            root / "noidle",
            hide_idle=True,
            poll_interval_s=args.poll_interval,
            records=args.records,
        ) as env:
            progress(f"noidle: {args.poll_samples} notifications, server without IDLE")
            results.noidle, results.noidle_log = daemon_samples(
                env, args.poll_samples, rng, progress
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="ip-bench-lat-", dir=args.workdir))
    try:
        results = measure(args, root)
    except (BenchError, InboxPollerError) as exc:
        print(f"bench_latency: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_latency: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"bench_latency: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
