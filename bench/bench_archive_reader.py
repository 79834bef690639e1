"""Measure the archive reader's peak memory and speed, and archive verify's time per GB.

Writes one multi-GB payload (the simulator's ``{"status": ..., "data": {"item": [...]}}``
records, streaming) into a temporary archive with its manifest line, then:

1. a child process (``--child-records``) streams every record with
   ``ArchiveReader.records`` and reports its peak RSS (``ru_maxrss``) and the time;
2. a child process (``--child-verify``) runs ``archive_reader.verify`` over the archive
   and reports the time per GB (the file is in the page cache after step 1: this is the
   hashing and walking cost, not the disk's).

    python -m bench.bench_archive_reader                 # 2 GiB
    python -m bench.bench_archive_reader --gib 4 --workdir /var/tmp
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from inbox_poller.sandbox.simulator.payloads import write_payload

PATH = "GetNewsletterContactDataSummaryAsync/2026/11/stat-1_job-1.json"


def make_archive(root: Path, size_bytes: int) -> tuple[int, int]:
    """Write one payload of at least *size_bytes* and its manifest line; return bytes, records."""
    payload = root / PATH
    payload.parent.mkdir(parents=True)
    info = write_payload(payload, stat="1", records=1, min_bytes=size_bytes)
    line = {
        "job_id": "1",
        "stat": "1",
        "method": "GetNewsletterContactDataSummaryAsync",
        "startdate": None,
        "enddate": None,
        "path": PATH,
        "bytes": info.bytes,
        "sha256": info.sha256,
        "records": info.records,
        "top_level": "object",
        "message_id": None,
        "submitted_at": None,
        "archived_at": "2026-11-29T00:00:00+00:00",
        "export_id": 1,
        "source": "https://h/p",
    }
    (root / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    return info.bytes, info.records


def child_records(root: Path) -> None:
    from inbox_poller.archive_reader import ArchiveReader

    reader = ArchiveReader(root)
    started = time.perf_counter()
    count = 0
    digest = hashlib.sha256()
    for entry in reader.manifest():
        for record in reader.records(entry):
            count += 1
            if count % 100_000 == 0:
                digest.update(record["subscriberid"].encode())
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"records": count, "seconds": seconds, "peak_rss_bytes": peak}))


def child_verify(root: Path) -> None:
    from inbox_poller.archive_reader import verify

    started = time.perf_counter()
    report = verify(root)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ok": report.ok, "bytes": report.bytes, "seconds": seconds, "peak": peak}))


def run_child(flag: str, root: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_archive_reader", flag, str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    value: dict[str, float] = json.loads(result.stdout)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="payload size in GiB")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--child-records", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-verify", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_records:
        child_records(args.child_records)
        return 0
    if args.child_verify:
        child_verify(args.child_verify)
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        size, records = make_archive(root, int(args.gib * (1 << 30)))
        print(f"payload: {size / 1e9:.2f} GB, {records} records")
        read = run_child("--child-records", root)
        assert read["records"] == records, read
        print(
            f"reader: {read['records']:.0f} records in {read['seconds']:.1f} s "
            f"({size / 1e6 / read['seconds']:.0f} MB/s), "
            f"peak RSS {read['peak_rss_bytes'] / 2**20:.1f} MiB"
        )
        checked = run_child("--child-verify", root)
        assert checked["ok"], checked
        print(
            f"verify: {checked['seconds']:.2f} s for {size / 1e9:.2f} GB "
            f"({checked['seconds'] / (size / 1e9):.2f} s per GB), "
            f"peak RSS {checked['peak'] / 2**20:.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
