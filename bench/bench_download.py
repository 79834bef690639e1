"""Benchmark: inbox-poller's download + archive against ``curl -o`` on loopback HTTPS.

Generates JSON payloads of contact records on disk (never held in memory), serves
them from a loopback HTTPS server, and times, for each size and repetition:

* ``curl -s -o FILE --cacert CA URL`` (no fsync);
* one child process running ``SafeDownloader.download`` into a file sink, then the
  commit (fsync, rename, directory fsync), exactly as the daemon archives.

Peak RSS comes from ``os.wait4`` on each child. The "ijson floor" column is the
parser alone over the file from the page cache (same settings as the downloader):
no download can validate faster than that. See bench/README.md.

Run: ``python -m bench.bench_download [--sizes 64,512] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
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


class FileSink:
    """A minimal archive: temp file in the target directory, fsync, rename, fsync dir.

    To use the real archive instead, replace ``FileSink(...)``/``commit()`` in
    :func:`child_main` with ``part = archive.begin(...)`` / ``archive.commit(part, ...)``.
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(f".{final.name}.{os.getpid()}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        self._fd = os.open(self.part, flags, 0o600)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def restart(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        os.replace(self.part, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def child_main(url: str, ca: Path, out: Path) -> None:
    """Download *url* into *out* and print a JSON line with the timings."""
    from inbox_poller.config import DownloadConfig
    from inbox_poller.download import SafeDownloader

    host = url.split("/")[2]
    config = DownloadConfig(allowed_hosts=(host,), allow_private_addresses=True, max_bytes=2**40)
    started = time.perf_counter()
    downloader = SafeDownloader(config, ca_file=ca)
    sink = FileSink(out)
    result = downloader.download(url, sink)
    downloaded = time.perf_counter()
    sink.commit()
    done = time.perf_counter()
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
    """Print the seconds the parser alone needs for *path* (as the downloader runs it)."""
    from inbox_poller import download

    with path.open("rb") as handle:
        prefix = download.sniff_shape(handle.read(download.HEAD_BYTES))[1]
    started = time.perf_counter()
    with path.open("rb") as handle:
        items = download._JSON.items(handle, prefix, buf_size=download.PARSE_SLICE_BYTES)
        count = sum(1 for _ in items)
    print(json.dumps({"floor_s": time.perf_counter() - started, "records": count}))


# --- the parent: servers, runs, table ------------------------------------------------------


@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    report: dict[str, Any]


def _timed(argv: list[str]) -> Run:
    """Run *argv*; return its wall time, peak RSS (wait4) and JSON report, if any."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    return Run(seconds, usage.ru_maxrss / 1024, report)


class OpensslServer:
    """``openssl s_server -HTTP``: serves files holding a complete HTTP response (C, fast)."""

    def __init__(self, root: Path, cert: Path, key: Path) -> None:
        self.root = root
        self.port = _free_port()
        self._process = subprocess.Popen(
            [
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

    def close(self) -> None:
        self._server.close()


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


def _measure(url: str, ca: Path, work: Path, payload: Path, reps: int) -> dict[str, float]:
    curl_s: list[float] = []
    ours_s: list[float] = []
    download_s: list[float] = []
    commit_s: list[float] = []
    rss: list[float] = []
    out = work / "archive" / f"{payload.stem}.json"
    for _ in range(reps):
        curl = _timed(["curl", "-s", "-o", str(work / "curl.out"), "--cacert", str(ca), url])
        (work / "curl.out").unlink()
        ours = _timed(
            [sys.executable, "-m", "bench.bench_download", "--child", url, str(ca), str(out)]
        )
        if ours.report["bytes"] != payload.stat().st_size:
            raise SystemExit("the archived size differs from the payload")
        out.unlink()
        curl_s.append(curl.seconds)
        ours_s.append(ours.seconds)
        download_s.append(ours.report["download_s"])
        commit_s.append(ours.report["commit_s"])
        rss.append(ours.peak_rss_mib)
    floor = _timed([sys.executable, "-m", "bench.bench_download", "--floor", str(payload)])
    return {
        "curl": statistics.median(curl_s),
        "ours": statistics.median(ours_s),
        "download": statistics.median(download_s),
        "commit": statistics.median(commit_s),
        "rss": max(rss),
        "floor": floor.report["floor_s"],
    }


def _print_table(rows: list[tuple[int, dict[str, float]]], server: str, reps: int) -> None:
    print(f"\nserver: {server}; median of {reps} runs; peak RSS is the maximum over the runs")
    print(
        "| size | curl s | inbox-poller s (process) | download + commit s | ratio (process) "
        "| ratio (download + commit) | ijson floor s | floor / curl | peak RSS MiB |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, m in rows:
        work = m["download"] + m["commit"]
        print(
            f"| {size} MiB | {m['curl']:.2f} | {m['ours']:.2f} | {work:.2f} "
            f"| {m['ours'] / m['curl']:.1f}x | {work / m['curl']:.1f}x | {m['floor']:.2f} "
            f"| {m['floor'] / m['curl']:.1f}x | {m['rss']:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,512", help="payload sizes in MiB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--server", choices=("openssl", "python"), default="openssl")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument("--child", nargs=3, metavar=("URL", "CA", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--floor", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    if args.floor:
        floor_main(args.floor)
        return 0
    from inbox_poller.localca import make_local_ca

    work = Path(tempfile.mkdtemp(prefix="bench-download-", dir=args.workdir))
    try:
        ca = make_local_ca(work / "ca")
        (work / "archive").mkdir()
        server: OpensslServer | PythonServer = (
            OpensslServer(work, ca.server_cert, ca.server_key)
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
                rows.append((size, _measure(url, ca.ca_cert, work, payload, args.reps)))
        finally:
            server.close()
        _print_table(rows, args.server, args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
