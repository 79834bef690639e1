"""Benchmark: how long a CLI command takes to reach its work, against ``python -c pass``.

Starts the Pinpointe simulator (loopback HTTPS) in this process, writes a config for it
(the IMAP server named in it is never contacted by these commands), and runs, each
``--reps`` times in a rotating order, as separate processes:

* ``python -c pass`` (the anchor: the interpreter alone);
* ``python -m inbox_poller --help``;
* ``inbox-poller -c CONFIG status`` and ``exports`` (their work, reading a small
  ledger, takes a few milliseconds: their wall time bounds their time to first work);
* ``inbox-poller -c CONFIG submit ...``: its *first work* is the moment the simulator
  receives the API request, taken in this process; its wall time adds the answer, the
  ledger commits and the exit.

Peak RSS is ``ru_maxrss`` from ``os.wait4``. ``--root DIR`` runs the commands with
``inbox_poller`` imported from *DIR* as well (for example ``git archive main`` unpacked
there), interleaved, for a before/after table from one session. ``--importtime``
prints the ten largest cumulative imports of each command (``python -X importtime``).

Run from the repository root: ``python3 bench/bench_cli_startup.py [--reps 15]``.
"""

# ruff: noqa: E402

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from inbox_poller.sandbox.demo import write_secret
from inbox_poller.sandbox.simulator.server import PinpointeSimulator

TARGET_S = 0.15
TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"
"""GNU time, for the peak RSS of each command."""

CONFIG = """\
[pinpointe]
api_url = "{api_url}"
username = "{api_user}"
usertoken_file = "secrets/usertoken"
notify_email = "exports@inbox.example"
ca_file = "{sim_ca}"
timeout_s = 10

[imap]
host = "127.0.0.1"
port = 1
security = "tls"
username = "nobody"
password_file = "secrets/imap-password"
folder = "Notifications"

[download]
allowed_hosts = ["{host_rule}"]
allow_private_addresses = true
ca_file = "{sim_ca}"

[archive]
dir = "archive"

[state]
path = "state/state.db"
"""


@dataclass
class Samples:
    wall_s: list[float] = field(default_factory=list)
    first_work_s: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


class FirstCall:
    """Records when the simulator receives its next API call (monotonic clock)."""

    def __init__(self, sim: PinpointeSimulator) -> None:
        self._sim = sim
        self._lock = threading.Lock()
        self.at: float | None = None
        original = sim.receive_api_call

        def receive(raw: bytes, content_type: str, peer: str) -> Any:
            with self._lock:
                if self.at is None:
                    self.at = time.monotonic()
            return original(raw, content_type, peer)

        sim.receive_api_call = receive  # type: ignore[method-assign]

    def reset(self) -> None:
        with self._lock:
            self.at = None


def run_once(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, float]:
    """Run *argv*; return (started monotonic, wall seconds, peak RSS MiB, CPU seconds).

    The peak RSS comes from GNU time (``%M``): ``ru_maxrss`` of a child forked from this
    process would start at this process's own size (Linux records the forked image's
    high-water mark at exec), and this process holds the simulator.
    """
    rss_file = cwd / "maxrss"
    started = time.monotonic()
    process = subprocess.Popen(
        [TIME, "-q", "-f", "%M %U %S", "-o", str(rss_file), *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, errors_bytes = process.communicate()
    wall = time.monotonic() - started
    errors = errors_bytes.decode(errors="replace")
    code = process.returncode
    if code != 0 and not (code == 1 and "status" in argv):  # status: 1 means unhealthy
        raise SystemExit(f"{' '.join(argv[3:])} exited {code}: {errors.strip()[-1500:]}")
    rss_kib, user_s, system_s = rss_file.read_text(encoding="ascii").split()[-3:]
    return started, wall, int(rss_kib) / 1024, float(user_s) + float(system_s)


def commands(python: str, config: Path) -> dict[str, list[str]]:
    cli = [python, "-m", "inbox_poller"]
    submit = ["submit", "--stat", "4242", "--start", "20261101", "--end", "20261102"]
    return {
        "python -c pass": [python, "-c", "pass"],
        # the configuration alone: tomllib, tomlschema and the tables
        "import inbox_poller.config": [python, "-c", "import inbox_poller.config"],
        "--help": [*cli, "--help"],
        "submit": [*cli, "-c", str(config), *submit],  # first: it creates the ledger
        "status": [*cli, "-c", str(config), "status"],
        "exports": [*cli, "-c", str(config), "exports"],
    }


TRUST_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def environment(root: Path) -> dict[str, str]:
    """The commands' environment: *root* on the path, and bytecode read from its cache
    (an installed package has one; without it every import compiles its source)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOX_POLLER")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # as a stock Debian shell or a systemd unit has it: this VM's shell names the CA bundle
    # in $SSL_CERT_FILE, which keeps net.client_context parsing it (20 ms per command)
    for name in TRUST_VARIABLES:
        env.pop(name, None)
    env["PYTHONPATH"] = str(root)
    return env


@functools.cache
def compile_tree(root: Path) -> None:
    """Write the bytecode cache of *root*'s ``inbox_poller``, as installing it does (once
    per tree in a run: a bench may call it before each child it times)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "inbox_poller")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def measure(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Samples]]:
    roots = {"after": REPO_ROOT}
    if args.root is not None:
        roots = {"before": args.root.resolve(), "after": REPO_ROOT}
    results: dict[str, dict[str, Samples]] = {label: {} for label in roots}
    for root in roots.values():
        compile_tree(root)
    with PinpointeSimulator(work / "sim") as sim:
        sim.send_notifications = False
        first = FirstCall(sim)
        write_secret(work / "secrets" / "usertoken", sim.token)
        write_secret(work / "secrets" / "imap-password", "unused")
        config = work / "config.toml"
        config.write_text(
            CONFIG.format(
                api_url=sim.api_url,
                api_user=sim.username,
                sim_ca=sim.ca_file,
                host_rule=sim.host_rule,
            ),
            encoding="utf-8",
        )
        runs = [
            (label, name, argv, environment(root))
            for label, root in roots.items()
            for name, argv in commands(sys.executable, config).items()
        ]
        for _label, _name, argv, env in runs:  # warm the page cache and the ledger
            run_once(argv, work, env)
        for rep in range(args.reps):
            order = runs[rep % len(runs) :] + runs[: rep % len(runs)]
            for label, name, argv, env in order:
                first.reset()
                started, wall, rss, cpu = run_once(argv, work, env)
                samples = results[label].setdefault(name, Samples())
                samples.wall_s.append(wall)
                samples.rss_mib.append(rss)
                samples.cpu_s.append(cpu)
                if first.at is not None:
                    samples.first_work_s.append(first.at - started)
        if args.importtime:
            for label, name, argv, env in runs:
                print_importtime(label, name, argv, work, env)
    return results


def print_importtime(
    label: str, name: str, argv: list[str], cwd: Path, env: dict[str, str]
) -> None:
    if argv[1:3] == ["-c", "pass"]:
        return
    timed = [argv[0], "-X", "importtime", *argv[1:]]
    done = subprocess.run(timed, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, module = line.split("|")
            if not module.startswith("  "):  # top-level imports only
                rows.append((int(cumulative), module.strip()))
    total = sum(us for us, _ in rows)
    print(f"\n{label} {name}: {total / 1000:.0f} ms of imports; the largest top-level ones:")
    for us, module in sorted(rows, reverse=True)[:10]:
        print(f"  {us / 1000:7.1f} ms  {module}")


def table(results: dict[str, dict[str, Samples]], reps: int) -> str:
    lines = [
        f"median of {reps} runs; peak RSS is the median of GNU time's %M",
        "",
        "| code | command | wall s | first work s | minus `python -c pass` s | CPU s "
        "| peak RSS MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, by_name in results.items():
        anchor = statistics.median(by_name["python -c pass"].wall_s)
        for name, samples in by_name.items():
            wall = statistics.median(samples.wall_s)
            first = statistics.median(samples.first_work_s) if samples.first_work_s else None
            shown = first if first is not None else wall
            lines.append(
                f"| {label} | {name} | {wall:.3f} | "
                + (f"{first:.3f}" if first is not None else "-")
                + f" | {shown - anchor:+.3f} | {statistics.median(samples.cpu_s):.2f}"
                f" | {statistics.median(samples.rss_mib):.1f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--root", type=Path, help="also run inbox_poller from this directory")
    parser.add_argument("--importtime", action="store_true", help="list the largest imports")
    parser.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.root is not None and not (args.root / "inbox_poller").is_dir():
        parser.error(f"--root {args.root}: no inbox_poller/ there")
    work = Path(tempfile.mkdtemp(prefix="ip-bench-cli-", dir=args.workdir))
    try:
        results = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
