"""Benchmark: validating CSV and XML payloads against the JSON path, and reading them back.

Writes one payload per format with the simulator's writer (the same records, as JSON,
CSV and XML; never held in memory), then, each in its own child process so that peak
RSS (``os.wait4``) is that validator's alone, from the page cache:

* ``json-fast``: ``fastcheck.FastCheck`` (simdjson) fed 1 MiB chunks, as the download does;
* ``json-ijson``: ``validation.validate`` (ijson), the authority when the fast path is undecided;
* ``csv``: ``download.formats.validate_stored`` (the csv module, streaming);
* ``xml``: ``download.formats.validate_stored`` (defusedxml's expat, SAX, streaming);
* ``csv-read`` / ``xml-read``: ``archive_reader.read_records`` over every record.

Run: ``python -m bench.bench_formats [--records 2000000] [--reps 3]``. bench/README.md
has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = ("json-fast", "json-ijson", "csv", "xml", "csv-read", "xml-read")
_SOURCE = {"json-fast": "json", "json-ijson": "json", "csv-read": "csv", "xml-read": "xml"}


def child_main(case: str, path: Path) -> None:
    """Validate (or read) *path* as *case*; print one JSON line with records and seconds."""
    from inbox_poller.archive_reader import read_records
    from inbox_poller.download import validation
    from inbox_poller.download.fastcheck import FastCheck
    from inbox_poller.download.formats import validate_stored

    started = time.perf_counter()
    if case == "json-fast":
        check = FastCheck()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                check.feed(chunk)
        shape = check.finish()
        records = None if shape is None else shape.records
    elif case == "json-ijson":
        with path.open("rb") as handle:
            records = validation.validate(handle.read).records
    elif case in ("csv", "xml"):
        records = validate_stored(case, lambda: path.open("rb")).records
    else:
        records = sum(1 for _ in read_records(path))
    print(json.dumps({"records": records, "seconds": time.perf_counter() - started}))


def run_child(case: str, path: Path) -> dict[str, float]:
    """Run one case in a child; return its records, seconds and peak RSS (MiB)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_formats", "--child", case, str(path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.stdout.close()
    if status != 0:
        raise RuntimeError(f"{case}: child failed ({status})")
    result: dict[str, float] = json.loads(out)
    result["rss_mib"] = usage.ru_maxrss / 1024
    return result


def baseline_rss() -> float:
    """Peak RSS of a child that only imports the same modules (MiB)."""
    code = (
        "import inbox_poller.archive_reader, inbox_poller.download.validation,"
        " inbox_poller.download.fastcheck, inbox_poller.download.formats"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    _, _, usage = os.wait4(process.pid, 0)
    return usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]))
        return 0
    from inbox_poller.sandbox.simulator.payloads import write_table_payload

    with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
        files = {}
        for fmt in ("json", "csv", "xml"):
            path = Path(tmp) / f"payload.{fmt}"
            info = write_table_payload(
                path, method="GetSegmentSubscribersAsync", target="7", fmt=fmt, records=args.records
            )
            files[fmt] = (path, info.bytes)
        floor = baseline_rss()
        print(f"records: {args.records}; import-only child peak RSS {floor:.1f} MiB")
        print(f"{'case':<11} {'MiB':>8} {'MB/s':>8} {'records/s':>12} {'peak RSS MiB':>13}")
        for case in CASES:
            path, size = files[_SOURCE.get(case, case)]
            runs = [run_child(case, path) for _ in range(args.reps)]
            seconds = statistics.median(run["seconds"] for run in runs)
            rss = max(run["rss_mib"] for run in runs)
            assert all(run["records"] in (args.records, None) for run in runs), runs
            print(
                f"{case:<11} {size / 2**20:>8.0f} {size / seconds / 1e6:>8.0f} "
                f"{args.records / seconds:>12,.0f} {rss:>13.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
