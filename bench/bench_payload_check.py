"""Benchmark: the per-payload cost of storing and checking one small download.

What a backlog pays for every payload, apart from the network and the disk: the spool
(SHA-256, the write, the JSON check's thread hand-offs) and ``formats.FormatCheck`` (the
head sniffed for the main array, simdjson over the array, the probe), for payloads of
``--bytes`` (100 KB: a notification's export) written to a sink that discards them.
Each tree (this one, and ``--root`` for a before/after) runs in its own child process,
in turns; the figure is CPU microseconds per payload, the median of ``--reps`` rounds.
Anchor in the same child: SHA-256 and one simdjson parse of the same bytes alone.

Run: ``python3 bench/bench_payload_check.py [--root /tmp/before] [--bytes 100000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import hashlib, json, sys, time
import simdjson
import inbox_poller
from inbox_poller.download.formats import FormatCheck
from inbox_poller.download.spool import Spool

size, count = int(sys.argv[1]), int(sys.argv[2])
records, n = [], 0
while len(json.dumps(records)) < size:
    records.append({"statid": 4711, "subscriberid": n, "email": f"user{n}@example.com",
                    "opens": n % 7, "clicks": n % 3, "lastopened": "2026-11-02T10:00:00Z"})
    n += 1
payload = json.dumps({"status": "SUCCESS", "data": {"item": records}}).encode()

def one():
    check = FormatCheck("json")
    spool = Spool(lambda piece: None, check, chunk_bytes=len(payload))
    spool.buffer()[: len(payload)] = payload
    spool.put(len(payload))
    spool.finish()
    assert check.fast_shape() is not None

def anchor():
    hashlib.sha256(payload).hexdigest()
    parser.parse(payload)

parser = simdjson.Parser()
for _ in range(50):
    one()
started = time.process_time()
for _ in range(count):
    one()
ours = time.process_time() - started
started = time.process_time()
for _ in range(count):
    anchor()
alone = time.process_time() - started
result = {"from": inbox_poller.__file__, "bytes": len(payload)}
result.update(us=1e6 * ours / count, anchor_us=1e6 * alone / count)
print(json.dumps(result))
"""


def _run(root: Path, size: int, count: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(size), str(count)],
        cwd=root,  # "-c" puts the current directory first on sys.path
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    if not str(result.pop("from")).startswith(str(root)):
        raise SystemExit(f"the child imported inbox_poller from outside {root}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, help="also run the tree in this directory")
    parser.add_argument("--bytes", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=2000, help="payloads per round")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    trees = {"this tree": REPO_ROOT}
    if args.root:
        trees["--root"] = args.root.resolve()
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.reps):
        for name, root in trees.items():
            rounds[name].append(_run(root, args.bytes, args.count))
    print(f"median of {args.reps} rounds of {args.count} payloads, CPU per payload\n")
    print("| tree | payload bytes | spool + check µs | SHA-256 + one simdjson parse alone µs |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in rounds.items():
        ours = statistics.median(run["us"] for run in runs)
        alone = statistics.median(run["anchor_us"] for run in runs)
        print(f"| {name} | {int(runs[0]['bytes']):,} | {ours:.0f} | {alone:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
