"""Benchmark: what a costly mail costs to read, and what the read budget costs every mail.

Two measurements (docs/reliability.md §4.3):

* ``--cost``: each mail of ``tests/costly_mails.py`` read by ``extract`` in a child process of
  its own, with no budget (only a safety cap: ``--cap-s`` seconds, ``--cap-mib`` of address
  space), reporting wall time, and the child's peak RSS (``VmHWM``) before reading (the
  interpreter and the mail, built in the child) and how much reading added to it. ``--root DIR``
  reads with the ``inbox_poller`` package found in *DIR* instead of this checkout's, which
  is how the "before" column was measured (a copy of the package as it was before the fix).
* ``--overhead``: the corpus of tests/data/eml read ``--reps`` times in process and through
  a :class:`~inbox_poller.loop.budget.MailBudget` (one persistent worker): the difference
  per mail, and the worker's start-up time.
* ``--through-budget``: each costly mail read through the budget, as the daemon reads it.

Run from the repository root: ``python3 bench/bench_read_budget.py --cost --overhead``.
"""

# ruff: noqa: E402
# (the repository root goes on sys.path before the project imports, so the script runs as
# ``python3 bench/bench_read_budget.py`` without PYTHONPATH)

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.costly_mails import COSTLY_MAILS

_CHILD = """
import resource, sys, time
def hwm():  # VmHWM: this process's peak RSS since exec (ru_maxrss counts the parent's too)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
sys.path[:0] = [sys.argv[1], sys.argv[2]]
cap = int(sys.argv[4]) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from inbox_poller.matching.extract import extract
from tests.costly_mails import COSTLY_MAILS
raw = COSTLY_MAILS[sys.argv[3]]()
before = hwm()
started = time.perf_counter()
try:
    notification = extract(raw)
    outcome = f"read: {len(notification.texts)} texts, {len(notification.links)} links"
except MemoryError:
    outcome = "MemoryError"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
elapsed = time.perf_counter() - started
extra = (hwm() - before) // 1024
print(f"{elapsed:.3f}\\t{before // 1024}\\t{extra}\\t{outcome[:90]}", flush=True)
"""


def _run_child(args: list[str], cap_s: float) -> tuple[str | None, float, int]:
    """Run *args*; return (stdout or None on timeout, wall seconds, peak RSS MiB)."""
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.posix_spawn(
        args[0],
        args,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_DUP2, write_fd, 1),
            (os.POSIX_SPAWN_CLOSE, read_fd),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ],
    )
    os.close(write_fd)
    chunks: list[bytes] = []
    timed_out = False
    os.set_blocking(read_fd, False)
    while True:
        done, _status, usage = os.wait4(pid, os.WNOHANG)
        try:
            while chunk := os.read(read_fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        if done == pid:
            break
        if time.monotonic() - started > cap_s:
            os.kill(pid, 9)
            _pid, _status, usage = os.wait4(pid, 0)
            timed_out = True
            break
        time.sleep(0.05)
    os.close(read_fd)
    elapsed = time.monotonic() - started
    peak = usage.ru_maxrss // 1024
    return (None if timed_out else b"".join(chunks).decode()), elapsed, peak


def cost_table(root: Path, cap_s: float, cap_mib: int) -> None:
    print(f"| mail | bytes | seconds | peak RSS MiB (+ while reading) | outcome |  ({root})")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, build in COSTLY_MAILS.items():
        args = [sys.executable, "-c", _CHILD, str(root), str(ROOT), name, str(cap_mib)]
        out, _seconds, _peak = _run_child(args, cap_s)
        if out is None:
            seconds, base, extra, outcome = f"> {cap_s:.0f} (stopped)", "?", "?", "-"
        else:
            seconds, base, extra, outcome = out.strip().split("\t", 3)
        size = len(build())
        print(f"| {name} | {size:,} | {seconds} | {base} (+{extra}) | {outcome} |", flush=True)


def overhead(reps: int) -> None:
    from inbox_poller.loop.budget import MailBudget
    from inbox_poller.matching.extract import extract

    corpus = [p.read_bytes() for p in sorted((ROOT / "tests/data/eml").glob("*.eml"))]
    started = time.perf_counter()
    budget = MailBudget()
    budget.start()
    spawn = time.perf_counter() - started
    inline: list[float] = []
    budgeted: list[float] = []
    for _ in range(reps):
        for raw in corpus:
            started = time.perf_counter()
            extract(raw)
            inline.append(time.perf_counter() - started)
            started = time.perf_counter()
            budget.read(raw)
            budgeted.append(time.perf_counter() - started)
    budget.close()
    size = statistics.median(len(raw) for raw in corpus)
    print(f"worker start-up: {spawn * 1000:.0f} ms (once per reader, and after a refusal)")
    print(f"corpus: {len(corpus)} mails, median {size:,.0f} bytes, {reps} rounds")
    print(f"in process:       median {statistics.median(inline) * 1000:.2f} ms per mail")
    print(f"through budget:   median {statistics.median(budgeted) * 1000:.2f} ms per mail")
    diffs = [b - i for b, i in zip(budgeted, inline, strict=True)]
    print(f"overhead:         median {statistics.median(diffs) * 1000:.2f} ms per mail")


def through_budget() -> None:
    from inbox_poller.errors import ExtractError
    from inbox_poller.loop.budget import MailBudget

    budget = MailBudget()
    print("| mail | seconds | outcome |")
    print("| --- | ---: | --- |")
    for name, build in COSTLY_MAILS.items():
        raw = build()
        started = time.perf_counter()
        try:
            notification = budget.read(raw)
            outcome = f"read: {len(notification.texts)} texts, {len(notification.links)} links"
        except ExtractError as exc:
            outcome = f"refused: {exc}"
        elapsed = time.perf_counter() - started
        print(f"| {name} | {elapsed:.2f} | {outcome[:100]} |", flush=True)
    budget.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost", action="store_true", help="each costly mail, no budget")
    parser.add_argument("--root", type=Path, default=ROOT, help="where inbox_poller is")
    parser.add_argument("--cap-s", type=float, default=300.0)
    parser.add_argument("--cap-mib", type=int, default=8192)
    parser.add_argument("--overhead", action="store_true", help="the budget's cost per mail")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--through-budget", action="store_true", help="costly mails, budgeted")
    args = parser.parse_args()
    if args.cost:
        cost_table(args.root.resolve(), args.cap_s, args.cap_mib)
    if args.overhead:
        overhead(args.reps)
    if args.through_budget:
        through_budget()


if __name__ == "__main__":
    main()
