"""Benchmark: inbox-poller's download + archive against ``curl -o`` on loopback HTTPS.

Generates JSON payloads of contact records on disk (never held in memory), serves
them from a loopback HTTPS server, and times, for each size and repetition, in a
rotating order:

* ``curl -s -o FILE --cacert CA URL`` (no fsync);
* one child process running ``SafeDownloader.download`` into a file sink, then the
  commit (fsync, rename, directory fsync), exactly as the daemon archives;
* the same child with the JSON check replaced by one that accepts everything
  (``--no-validation``): TLS, SHA-256 and the writes alone, the floor of this design.

Peak RSS comes from ``os.wait4`` on each child. Then each validator runs alone over the
file from the page cache: ``fastcheck.FastCheck`` (simdjson) and ``validation.validate``
(ijson, which the downloader uses only when the fast check is undecided), and SHA-256
alone. Last, the least wall time the work can take here whatever the client's design
(curl's CPU, plus SHA-256 and the fast check alone, over the CPUs the client has) and
its ratio to curl: whether the 1.2x target is within this machine's reach. See
bench/README.md.

Run: ``python -m bench.bench_download [--sizes 64,512] [--reps 5]``.
"""

# ruff: noqa: E402
# (bench/ and the repository root go on sys.path before the project imports)

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_cli_startup import compile_tree, environment

from inbox_poller.archive import Archive
from inbox_poller.models import Export, ExportRequest, ExportState, utc_now

MIB = 1024 * 1024
TARGET_RATIO = 1.2
"""Issue 13: download + commit in at most this many times curl's wall time."""
_FIRST = ("Anna", "Ben", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiro", "Ivan", "Jürgen")
_LAST = ("Smith", "Müller", "O'Neil", "Nguyen", "García", "Kowalski", "Rossi", "Dubois")
_STATUS = ("active", "bounced", "unsubscribed")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",
)
_RECORD = (
    '{"statid":4711,"listid":%d,"subscriberid":%d,"emailaddress":"user%d@example%d.com",'
    '"firstname":%s,"lastname":%s,"subscribedate":%d,"confirmed":%s,"format":"h",'
    '"status":"%s","opens":%d,"clicks":%d,"lastopened":"2025-11-%02dT10:%02d:00Z",'
    '"openip":"203.0.113.%d","useragent":"%s","score":%d.%02d,'
    '"customfields":{"company":"Acme Widgets Ltd","city":"Zürich","tags":["newsletter","%s"]}}'
)


def _records() -> Iterator[str]:
    rng = random.Random(1)
    first = [json.dumps(name, ensure_ascii=False) for name in _FIRST]
    last = [json.dumps(name, ensure_ascii=False) for name in _LAST]
    n = 0
    while True:
        n += 1
        yield _RECORD % (
            n % 40,
            1_000_000 + n,
            n,
            n % 97,
            rng.choice(first),
            rng.choice(last),
            1_700_000_000 + n,
            "true" if n % 5 else "false",
            rng.choice(_STATUS),
            rng.randrange(40),
            rng.randrange(10),
            1 + n % 28,
            n % 60,
            n % 250,
            rng.choice(_AGENTS),
            rng.randrange(100),
            rng.randrange(100),
            rng.choice(_STATUS),
        )


def write_payload(path: Path, size: int) -> int:
    """Write a ``{"status", "data": {"item": [...]}}`` document of about *size* bytes."""
    records = _records()
    written = 0
    count = 0
    with path.open("wb") as out:
        out.write(b'{"status":"SUCCESS","version":"1.0","data":{"item":[')
        while written < size:
            batch = ",".join(next(records) for _ in range(2000)).encode()
            out.write(batch if count == 0 else b"," + batch)
            written += len(batch) + 1
            count += 2000
        out.write(b"]}}")
    return count


# --- the archive sink (a stand-in until inbox_poller.archive exists) ----------------------


class _AcceptAll:
    """Stands in for ``fastcheck.FastCheck`` in ``--no-validation`` runs: the floor."""

    reason = None

    def feed(self, data: bytes) -> None:
        """Look at nothing."""

    def finish(self) -> Any:
        from inbox_poller.download.shape import Shape

        return Shape("unknown", None)


def child_main(url: str, ca: Path, out: Path, *, validate: bool = True) -> None:
    """Download *url* into *out* and print a JSON line with the timings.

    Without *validate*, the downloader runs with its JSON check replaced by one that
    accepts everything: TLS, SHA-256 and the writes alone, the floor for this design.
    """
    from inbox_poller.config import DownloadConfig
    from inbox_poller.download import fetcher as download
    from inbox_poller.download import formats

    if not validate:
        formats.FastCheck = _AcceptAll  # type: ignore[attr-defined, assignment]
    host = url.split("/")[2]
    config = DownloadConfig(allowed_hosts=(host,), allow_private_addresses=True, max_bytes=2**40)
    archive = Archive(out.parent / "archive")
    export = Export(
        1,
        ExportRequest("42", "20261101", "20261102"),
        ExportState.DOWNLOADING,
        utc_now(),
        utc_now(),
        job_id=f"bench{os.getpid()}",
        submitted_at=utc_now(),
    )
    started = time.perf_counter()
    downloader = download.SafeDownloader(config, ca_file=ca)
    part = archive.begin(export)
    result = downloader.download(url, part)
    downloaded = time.perf_counter()
    # what the poller does next: seal (fsync), rename + directory fsync, manifest line
    part.seal()
    archived = archive.describe(export, result)
    archive.publish(part.path, archived)
    archive.append_manifest(export, archived, utc_now(), lambda offset: None)
    done = time.perf_counter()
    archive.final_path(archived).replace(out)
    print(
        json.dumps(
            {
                "download_s": downloaded - started,
                "commit_s": done - downloaded,
                "bytes": result.bytes,
                "records": result.records,
                "sha256": result.sha256,
            }
        )
    )


def floor_main(path: Path) -> None:
    """Print the CPU seconds SHA-256 alone and each validator alone need for *path*, read
    from the page cache (the reads are not counted: the downloader gets its bytes from
    the socket)."""
    from inbox_poller.download import fetcher as download
    from inbox_poller.download.fastcheck import FastCheck
    from inbox_poller.download.validation import validate

    check = FastCheck()
    digest = hashlib.sha256()
    sha_s = fast_s = 0.0
    buffer = memoryview(bytearray(download.CHUNK_BYTES))
    with path.open("rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            piece = buffer[:size]
            started = time.process_time()
            digest.update(piece)
            between = time.process_time()
            check.feed(piece)
            fast_s += time.process_time() - between
            sha_s += between - started
    started = time.process_time()
    shape = check.finish()
    fast_s += time.process_time() - started
    started = time.perf_counter()
    with path.open("rb") as handle:
        slow = validate(handle.read)
    ijson_s = time.perf_counter() - started
    if shape != slow:
        raise SystemExit(f"the fast check found {shape} ({check.reason}), ijson {slow}")
    report = {"sha_s": sha_s, "fast_s": fast_s, "ijson_s": ijson_s, "records": slow.records}
    print(json.dumps(report))


# --- the parent: servers, runs, table ------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    report: dict[str, Any]
    cpu_s: float = 0.0
    """user + system CPU time of the command (all its threads)."""
    server_cpu_s: float = 0.0
    """CPU time the server used meanwhile (openssl only)."""


def _timed(argv: list[str], root: Path | None = None) -> Run:
    """Run *argv* with ``inbox_poller`` imported from *root* (default: this checkout);
    return its wall time, peak RSS (wait4) and JSON report, if any.

    The environment is an installed daemon's (``bench_cli_startup.environment``): bytecode
    read from the cache the first call compiled (``compile_tree``, outside the timing), no
    ``$SSL_CERT_FILE`` for each TLS context to parse; curl is given its CA on the command
    line. ``bench_s3_archive`` runs its children through here too.
    """
    code = root or REPO_ROOT
    compile_tree(code)
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env=environment(code),
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert process.stdout is not None and process.stderr is not None
    output = process.stdout.read().decode()
    errors = process.stderr.read().decode()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({process.returncode}): {errors.strip()[-2000:]}")
    lines = [line for line in output.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    return Run(seconds, usage.ru_maxrss / 1024, report, usage.ru_utime + usage.ru_stime)


class OpensslServer:
    """``openssl s_server -HTTP``: serves files holding a complete HTTP response (C, fast)."""

    def __init__(self, root: Path, cert: Path, key: Path, pin: list[str] | None = None) -> None:
        self.root = root
        self.port = _free_port()
        self._process = subprocess.Popen(
            [
                *(pin or []),
                "openssl",
                "s_server",
                "-quiet",
                "-accept",
                f"127.0.0.1:{self.port}",
                "-cert",
                str(cert),
                "-key",
                str(key),
                "-HTTP",
            ],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def publish(self, payload: Path) -> str:
        served = self.root / f"{payload.stem}.http"
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {payload.stat().st_size}\r\n\r\n"
        )
        with served.open("wb") as out, payload.open("rb") as body:
            out.write(head.encode())
            shutil.copyfileobj(body, out, MIB)
        return f"https://localhost:{self.port}/{served.name}"

    def cpu_seconds(self) -> float:
        """user + system CPU time the server has used so far."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


class PythonServer:
    """The test suite's threaded stdlib HTTPS server, serving the file with Content-Length."""

    def __init__(self, root: Path, ca: Any) -> None:
        from tests.plugins.https_servers import HttpsServer

        self._server = HttpsServer(ca)

    def publish(self, payload: Path) -> str:
        from tests.plugins.https_servers import Reply

        self._server.route(f"/{payload.name}", Reply(file=payload))
        return self._server.url(f"/{payload.name}")

    def cpu_seconds(self) -> float:
        """Not known: the server runs in this process."""
        return 0.0

    def close(self) -> None:
        self._server.close()


def _pinning() -> tuple[list[str], list[str]]:
    """``taskset`` prefixes: the server on the last CPU, the clients on all the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        raise SystemExit("--pin needs taskset and at least 2 CPUs")
    others = ",".join(str(cpu) for cpu in cpus[:-1])
    return ["taskset", "-c", str(cpus[-1])], ["taskset", "-c", others]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"the server did not start on port {port}")


def _measure(
    url: str,
    ca: Path,
    work: Path,
    payload: Path,
    reps: int,
    *,
    pin: list[str],
    server_cpu: Callable[[], float],
    before: Path | None = None,
) -> dict[str, float]:
    """Run curl, the downloader and the downloader without validation *reps* times each,
    in a rotating order (the VM's noise drifts); return medians and the peak RSS.

    *pin* prefixes every client (``taskset -c 0`` or nothing); with *before*, the
    downloader also runs with ``inbox_poller`` imported from that directory ("old").
    """
    runs: dict[str, list[Run]] = {"curl": [], "ours": [], "bare": [], "old": []}
    out = work / "archive" / f"{payload.stem}.json"
    child = [*pin, sys.executable, "-m", "bench.bench_download", "--child", url, str(ca), str(out)]
    commands = {
        "curl": [*pin, "curl", "-s", "-o", str(work / "curl.out"), "--cacert", str(ca), url],
        "ours": child,
        "bare": [*child, "--no-validation"],
    }
    if before is not None:
        commands["old"] = child
    digest = _sha256(payload)
    order = list(commands)
    for _ in range(reps):
        for name in order:
            server_before = server_cpu()
            run = _timed(commands[name], root=before if name == "old" else None)
            run.server_cpu_s = server_cpu() - server_before
            (work / "curl.out" if name == "curl" else out).unlink()
            if name != "curl" and run.report["sha256"] != digest:
                raise SystemExit("the archived payload differs from the one served")
            runs[name].append(run)
        order.append(order.pop(0))
    floor = _timed([sys.executable, "-m", "bench.bench_download", "--floor", str(payload)])

    def median(name: str, key: str | None = None) -> float:
        return statistics.median(
            run.seconds if key is None else sum(run.report[k] for k in key.split("+"))
            for run in runs[name]
        )

    def cpu(name: str, server: bool = False) -> float:
        return statistics.median(run.server_cpu_s if server else run.cpu_s for run in runs[name])

    old = {}
    if before is not None:
        old = {"old": median("old", "download_s+commit_s"), "old_cpu": cpu("old")}
    return {
        **old,
        "curl": median("curl"),
        "ours": median("ours"),
        "work": median("ours", "download_s+commit_s"),
        "commit": median("ours", "commit_s"),
        "bare": median("bare", "download_s+commit_s"),
        "rss": max(run.peak_rss_mib for run in runs["ours"]),
        "curl_cpu": cpu("curl"),
        "ours_cpu": cpu("ours"),
        "bare_cpu": cpu("bare"),
        "server_cpu": cpu("curl", server=True),
        "server_ours_cpu": cpu("ours", server=True),
        "fast": floor.report["fast_s"],
        "sha": floor.report["sha_s"],
        "ijson": floor.report["ijson_s"],
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def _print_table(
    rows: list[tuple[int, dict[str, float]]], server: str, reps: int, pinned: bool
) -> None:
    placement = "server on CPU 1, clients on CPU 0 (taskset)" if pinned else "not pinned"
    print(
        f"\nserver: {server}, {placement}; median of {reps} runs; "
        "peak RSS is the maximum over the runs"
    )
    print(
        "| size | curl s | inbox-poller s (process) | download + commit s | ratio (process) "
        "| ratio (download + commit) | without validation s | its ratio "
        "| fast check alone s | ijson alone s | peak RSS MiB |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, m in rows:
        print(
            f"| {size} MiB | {m['curl']:.2f} | {m['ours']:.2f} | {m['work']:.2f} "
            f"| {m['ours'] / m['curl']:.2f}x | {m['work'] / m['curl']:.2f}x | {m['bare']:.2f} "
            f"| {m['bare'] / m['curl']:.2f}x | {m['fast']:.2f} | {m['ijson']:.2f} "
            f"| {m['rss']:.0f} |"
        )
    print(
        "\nCPU seconds (user + system, median): the client, and the server while it served"
        " that client\n"
    )
    print(
        "| size | curl | server for curl | inbox-poller | server for inbox-poller "
        "| without validation | before (--root) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, m in rows:
        old_cpu = f"{m['old_cpu']:.2f}" if "old_cpu" in m else "-"
        print(
            f"| {size} MiB | {m['curl_cpu']:.2f} | {m['server_cpu']:.2f} | {m['ours_cpu']:.2f} "
            f"| {m['server_ours_cpu']:.2f} | {m['bare_cpu']:.2f} | {old_cpu} |"
        )
    for size, m in rows:
        if "old" in m:
            print(
                f"{size} MiB, download + commit with --root (before): {m['old']:.2f} s, "
                f"{m['old'] / m['curl']:.2f}x curl"
            )
    commits = ", ".join(f"{m['commit']:.2f} s at {size} MiB" for size, m in rows)
    print(f"\n(commit, i.e. fsync + rename + directory fsync: {commits}.)")
    _print_least(rows, pinned)


def _print_least(rows: list[tuple[int, dict[str, float]]], pinned: bool) -> None:
    """The least wall time the work can take on this machine, whatever the client's design.

    The client must spend at least what curl spends (TLS and the writes: curl does only
    that, in C), plus SHA-256 and the fast check alone (both required by the target). On
    the CPUs it has, that takes at least their sum divided by their number: pinned, every
    CPU but the server's; not pinned, every CPU, which the server's own CPU shares.
    """
    cpus = len(os.sched_getaffinity(0))
    client_cpus = cpus - 1 if pinned else cpus
    print(
        f"\nThe least the work needs on this machine ({cpus} CPUs; the client on {client_cpus}"
        f"{'' if pinned else ', shared with the server'}): CPU seconds\n"
    )
    print(
        "| size | curl's CPU | SHA-256 alone | fast check alone | server's CPU beside ours "
        "| least wall s | least ratio | target |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for size, m in rows:
        shared = 0.0 if pinned else m["server_ours_cpu"]
        least = (m["curl_cpu"] + m["sha"] + m["fast"] + shared) / client_cpus
        ratio = least / m["curl"]
        verdict = "reachable" if ratio <= TARGET_RATIO else "out of reach here"
        print(
            f"| {size} MiB | {m['curl_cpu']:.2f} | {m['sha']:.2f} | {m['fast']:.2f} "
            f"| {shared:.2f} | {least:.2f} | {ratio:.2f}x | <= {TARGET_RATIO}x: {verdict} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,512", help="payload sizes in MiB")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--server", choices=("openssl", "python"), default="openssl")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="taskset: the server on the last CPU, curl and the downloader on the others",
    )
    parser.add_argument(
        "--root",
        type=Path,
        help="also run the downloader with inbox_poller imported from this directory",
    )
    parser.add_argument("--child", nargs=3, metavar=("URL", "CA", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-validation", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(
            args.child[0], Path(args.child[1]), Path(args.child[2]), validate=not args.no_validation
        )
        return 0
    if args.floor:
        floor_main(args.floor)
        return 0
    from inbox_poller.sandbox.localca import make_local_ca

    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.workdir))
    try:
        ca = make_local_ca(work / "ca")
        (work / "archive").mkdir()
        server_pin, client_pin = _pinning() if args.pin else ([], [])
        server: OpensslServer | PythonServer = (
            OpensslServer(work, ca.server_cert, ca.server_key, server_pin)
            if args.server == "openssl"
            else PythonServer(work, ca)
        )
        rows = []
        try:
            for size in (int(text) for text in args.sizes.split(",")):
                payload = work / f"payload-{size}mib.json"
                count = write_payload(payload, size * MIB)
                print(f"{size} MiB: {count} records, {payload.stat().st_size} bytes", flush=True)
                url = server.publish(payload)
                measured = _measure(
                    url,
                    ca.ca_cert,
                    work,
                    payload,
                    args.reps,
                    pin=client_pin,
                    server_cpu=server.cpu_seconds,
                    before=args.root.resolve() if args.root else None,
                )
                rows.append((size, measured))
        finally:
            server.close()
        _print_table(rows, args.server, args.reps, args.pin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
