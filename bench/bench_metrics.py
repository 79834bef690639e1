"""Benchmark: what the Prometheus metrics cost a pass, a scrape and the process.

* a whole ``run --once`` pass (real ledger and archive, fake mailbox, API and downloader,
  one export archived per pass) with ``NoMetrics``, with ``PrometheusMetrics``, and with
  ``PrometheusMetrics`` writing its textfile after the pass (what ``run --once`` does),
  alternating so that drift hits all three alike;
* each call the loop makes (``export_archived``, ``failure``), in microseconds;
* the daemon's refresh every 10 s (``observe_health`` and the textfile write) and one
  scrape of ``/metrics`` over loopback;
* the memory prometheus_client adds to a process (peak RSS of a child that imports the
  metrics room, against one that does not).

Run from the repository root: ``python3 bench/bench_metrics.py [--passes 60]``.
"""

# ruff: noqa: E402

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inbox_poller.archive import Archive
from inbox_poller.errors import DownloadTransient
from inbox_poller.ledger.store import Store
from inbox_poller.loop.archiver import ExportArchiver
from inbox_poller.loop.poller import Poller
from inbox_poller.loop.reader import ReaderSettings
from inbox_poller.loop.submitter import Submitter
from inbox_poller.metrics.registry import PrometheusMetrics
from inbox_poller.models import CONTACT_DATA_METHOD, ExportRequest
from inbox_poller.ports import HealthSample, Metrics, NoMetrics
from inbox_poller.urlpolicy import parse_host_rule
from tests.fakes import FakeApi, FakeDownloader, FakeMailbox
from tests.loop.test_poller import PAYLOAD, notification

SAMPLE = HealthSample(
    counts={"acknowledged": 500, "submitted": 2},
    oldest_waiting_at=datetime(2026, 11, 1, tzinfo=UTC),
    last_pass_at=datetime(2026, 11, 1, tzinfo=UTC),
    overdue=0,
    recent_failures=0,
    healthy=True,
)


class Loop:
    """One ledger, archive and fake edges, with the given metrics."""

    def __init__(self, root: Path, metrics: Metrics, after: Callable[[], None]) -> None:
        self.store = Store(root / "state.db")
        self.mailbox = FakeMailbox()
        self.downloader = FakeDownloader()
        self.after = after
        archiver = ExportArchiver(
            self.store, Archive(root / "archive"), self.downloader, max_attempts=2, metrics=metrics
        )
        settings = ReaderSettings(rules=(parse_host_rule(".mypinpointe.com"),), keyword="$X")
        self.poller = Poller(self.store, archiver, settings, metrics=metrics)
        self.submitter = Submitter(self.store, FakeApi(), metrics=metrics)
        self.count = 0

    def one_pass(self) -> float:
        """Submit one export, deliver its mail, and time the pass that archives it."""
        self.count += 1
        export = self.submitter.submit(ExportRequest(str(self.count), "20261001", "20261002"))
        url = f"https://na01.mypinpointe.com/exports/{export.job_id}.json"
        self.downloader.payloads[url] = PAYLOAD
        mid = f"<{export.job_id}@bench>"
        self.mailbox.deliver(notification(export.job_id, url, mid), mid)
        started = time.perf_counter()
        report = self.poller.run_once(self.mailbox)
        self.after()
        elapsed = time.perf_counter() - started
        assert report.archived == [export.job_id], report
        return elapsed

    def close(self) -> None:
        self.poller.reader.close()
        self.store.close()


def passes(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counted = PrometheusMetrics(mode="once", poll_interval_s=60)
        textfile = PrometheusMetrics(mode="once", poll_interval_s=60, textfile=root / "m.prom")
        for name in ("none", "counted", "textfile"):
            (root / name).mkdir()
        loops = {
            "without metrics (NoMetrics)": Loop(root / "none", NoMetrics(), lambda: None),
            "PrometheusMetrics": Loop(root / "counted", counted, lambda: None),
            "PrometheusMetrics + textfile": Loop(
                root / "textfile", textfile, lambda: textfile.observe_health(SAMPLE)
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(count):
            for name, loop in loops.items():
                times[name].append(loop.one_pass())
        for loop in loops.values():
            loop.close()
        return {name: statistics.median(values) for name, values in times.items()}


def calls() -> dict[str, float]:
    metrics = PrometheusMetrics(mode="daemon", poll_interval_s=60)
    error = DownloadTransient("reset")
    number = 20_000
    archived = timeit.timeit(
        lambda: metrics.export_archived(CONTACT_DATA_METHOD, 5_000_000, download_s=2, waited_s=60),
        number=number,
    )
    failure = timeit.timeit(lambda: metrics.failure("download", error), number=number)
    none = NoMetrics()
    null = timeit.timeit(lambda: none.failure("download", error), number=number)
    return {
        "export_archived µs": archived / number * 1e6,
        "failure µs": failure / number * 1e6,
        "NoMetrics.failure µs": null / number * 1e6,
    }


def refresh_and_scrape() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = PrometheusMetrics(
            mode="daemon", poll_interval_s=60, textfile=Path(tmp) / "inbox_poller.prom"
        )
        number = 500
        refresh = timeit.timeit(lambda: metrics.observe_health(SAMPLE), number=number)
        port = metrics.listen("127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape() -> int:
            with urllib.request.urlopen(url, timeout=10) as response:
                return len(response.read())

        size = scrape()
        scrapes = timeit.timeit(scrape, number=number)
        metrics.close()
        textfile_bytes = (Path(tmp) / "inbox_poller.prom").stat().st_size
    return {
        "refresh + textfile write ms": refresh / number * 1e3,
        "scrape over loopback ms": scrapes / number * 1e3,
        "exposition bytes": float(size),
        "textfile bytes": float(textfile_bytes),
    }


def memory() -> dict[str, float]:
    def peak_kib(code: str) -> float:
        # VmHWM, not ru_maxrss: a spawned child's ru_maxrss starts at its parent's
        report = "\nprint(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"
        child = subprocess.run(
            [sys.executable, "-c", code + report],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(child.stdout.split()[-1])

    base = statistics.median(peak_kib("import inbox_poller.wiring") for _ in range(3))
    with_metrics = statistics.median(
        peak_kib("import inbox_poller.wiring, inbox_poller.metrics.registry") for _ in range(3)
    )
    return {"peak RSS without metrics MiB": base / 1024, "with metrics MiB": with_metrics / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", type=int, default=60)
    args = parser.parse_args()
    print(f"| pass (median of {args.passes}) | ms |")
    print("| --- | --- |")
    for name, seconds in passes(args.passes).items():
        print(f"| {name} | {seconds * 1e3:.2f} |")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    for figures in (calls(), refresh_and_scrape(), memory()):
        for name, figure in figures.items():
            print(f"| {name} | {figure:.2f} |")


if __name__ == "__main__":
    main()
