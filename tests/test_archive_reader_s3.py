"""The archive's readers on S3 (issue 14): ``BucketReader``, ``verify_bucket`` and
``inbox-poller archive verify`` with ``[archive] url``, against a real SeaweedFS."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.archive.s3 import S3Archive
from inbox_poller.archive_reader import BucketReader, Problem, verify_bucket
from inbox_poller.cli.program import main
from inbox_poller.errors import ArchiveReadError
from tests.archive.test_s3 import NOW, _archived, _export
from tests.plugins.seaweedfs import S3Bucket
from tests.samples import MINIMAL

pytestmark = pytest.mark.seaweedfs

PREFIX = "arch/prod"


def _store(archive: S3Archive, job_id: str, payload: bytes) -> str:
    """Archive *payload* as export *job_id* the way the loop does; return its path."""
    export = _export(job_id)
    archived = _archived(payload, archive.relative_path(export))
    part = archive.begin(export)
    part.write(payload)
    part.seal()
    archive.publish(part.path, archived)
    archive.append_manifest(export, archived, NOW)
    return archived.path


def _two_exports(bucket: S3Bucket) -> tuple[S3Archive, list[str]]:
    archive = S3Archive(bucket.client(), bucket.name, PREFIX)
    paths = [
        _store(archive, "101", b'[{"id": 1}, {"id": 2}]'),
        _store(archive, "102", b'{"data": {"item": [{"id": "x"}]}}'),
    ]
    return archive, paths


def test_the_reader_yields_each_manifest_object_and_streams_records(
    s3_bucket: S3Bucket,
) -> None:
    archive, paths = _two_exports(s3_bucket)
    reader = BucketReader(archive.objects(), PREFIX)
    entries = list(reader.manifest())
    assert [e.job_id for e in entries] == ["101", "102"]
    assert [e.path for e in entries] == paths
    assert list(reader.records(entries[0])) == [{"id": 1}, {"id": 2}]
    assert list(reader.records(entries[1])) == [{"id": "x"}]
    with pytest.raises(ArchiveReadError, match="not a path inside the archive"):
        list(reader.records("../elsewhere.json"))
    with pytest.raises(ArchiveReadError, match="no such object"):
        list(reader.records("GetX/2026/11/gone.json"))


def test_a_healthy_bucket_verifies(s3_bucket: S3Bucket) -> None:
    archive, _ = _two_exports(s3_bucket)
    report = verify_bucket(archive.objects(), PREFIX)
    assert report.ok, report.problems
    assert (report.lines, report.payloads) == (2, 2)
    assert report.root == f"{s3_bucket.url}/{PREFIX}"


def test_verify_reports_every_kind_of_damage(s3_bucket: S3Bucket) -> None:
    archive, paths = _two_exports(s3_bucket)
    client: Any = s3_bucket.client()
    name = s3_bucket.name
    client.put_object(Bucket=name, Key=f"{PREFIX}/{paths[0]}", Body=b'[{"id": 9}, {"id": 2}]')
    client.put_object(Bucket=name, Key=f"{PREFIX}/{paths[1]}", Body=b"{}")  # other size
    client.put_object(Bucket=name, Key=f"{PREFIX}/GetX/2026/11/stray.json", Body=b"[]")
    client.put_object(Bucket=name, Key=f"{PREFIX}/manifest/GetX/2026/11/bad.json", Body=b"{")
    client.put_object(Bucket=name, Key=f"{PREFIX}/.parts/7/abc.part", Body=b"x")
    client.create_multipart_upload(Bucket=name, Key=f"{PREFIX}/.parts/8/def.part")
    _store(archive, "103", b"[]")
    client.delete_object(Bucket=name, Key=f"{PREFIX}/{archive.relative_path(_export('103'))}")
    client.put_object(Bucket=name, Key="elsewhere/not-ours.json", Body=b"[]")  # not under it

    seen: list[Problem] = []
    report = verify_bucket(archive.objects(), PREFIX, seen.append)
    assert seen == report.problems
    kinds = {(p.kind, p.where) for p in report.problems}
    assert kinds == {
        ("sha256", paths[0]),
        ("size", paths[1]),
        ("stray", "GetX/2026/11/stray.json"),
        ("bad-line", "manifest/GetX/2026/11/bad.json"),
        ("partial", ".parts/7/abc.part"),
        ("upload", ".parts/8/def.part"),
        ("missing", archive.relative_path(_export("103"))),
    }
    assert not report.ok


def test_a_manifest_object_at_the_wrong_key_or_a_repeated_job_is_reported(
    s3_bucket: S3Bucket,
) -> None:
    archive, paths = _two_exports(s3_bucket)
    client: Any = s3_bucket.client()
    first = f"{PREFIX}/manifest/{paths[0].rsplit('.', 1)[0]}.json"
    line = client.get_object(Bucket=s3_bucket.name, Key=first)["Body"].read()
    client.put_object(Bucket=s3_bucket.name, Key=f"{PREFIX}/manifest/copy.json", Body=line)
    report = verify_bucket(archive.objects(), PREFIX)
    [problem] = report.problems
    assert report.lines == 3  # the misplaced object is counted, as a bad line is
    assert (problem.kind, problem.where) == ("bad-line", "manifest/copy.json")
    assert "whose manifest object is elsewhere" in problem.detail


def _config(tmp_path: Path, bucket: S3Bucket, endpoint: str | None = None) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        MINIMAL + f"\n[archive]\n{bucket.archive_keys(PREFIX, endpoint_url=endpoint)}\n",
        encoding="utf-8",
    )
    return path


def test_archive_verify_checks_the_configured_bucket(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_exports(s3_bucket)
    config = _config(tmp_path, s3_bucket)
    assert main(["--config", str(config), "archive", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"archive {s3_bucket.url}/{PREFIX}: 2 manifest line(s), 2 payload(s)" in out
    assert out.rstrip().endswith(": ok")

    s3_bucket.client().create_multipart_upload(
        Bucket=s3_bucket.name, Key=f"{PREFIX}/.parts/9/x.part"
    )
    assert main(["--config", str(config), "archive", "verify", "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["archive"] == f"{s3_bucket.url}/{PREFIX}" and not summary["ok"]
    assert summary["problems"] == [
        {"kind": "upload", "where": ".parts/9/x.part", "detail": "an incomplete multipart upload"}
    ]


def test_archive_verify_names_an_unreachable_endpoint_without_a_traceback(
    s3_bucket: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _config(tmp_path, s3_bucket, endpoint=f"https://127.0.0.1:{port}")
    assert main(["--config", str(config), "archive", "verify"]) == 1
    captured = capsys.readouterr()
    assert "unreadable: .: S3: cannot list" in captured.out
    assert "Traceback" not in captured.out + captured.err
