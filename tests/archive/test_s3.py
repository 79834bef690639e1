"""The archive on S3 (issue 14), against a real SeaweedFS over HTTPS (docs/engines.md)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.archive.s3 import PART_BYTES, S3Archive, make_client
from inbox_poller.config import S3ArchiveSettings, Secret
from inbox_poller.errors import ArchiveError
from inbox_poller.models import ArchivedFile, Export, ExportRequest, ExportState
from tests.plugins.seaweedfs import S3Bucket

pytestmark = pytest.mark.seaweedfs

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MIN_PART = 5 * 1024 * 1024
"""S3's smallest part (all but the last): the tests upload real multipart payloads."""
FINAL = "GetNewsletterContactDataSummaryAsync/2026/11/stat-42_job-123.json"


def _export(job_id: str = "123") -> Export:
    return Export(
        1,
        ExportRequest("42", "20261101", "20261102", "GetNewsletterContactDataSummaryAsync"),
        ExportState.DOWNLOADING,
        NOW,
        NOW,
        job_id=job_id,
        submitted_at=NOW,
        message_id="<m@x>",
    )


def _archived(payload: bytes, path: str = FINAL) -> ArchivedFile:
    return ArchivedFile(
        path=path,
        format="json",
        bytes=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        records=None,
        top_level="array",
        source="https://x.example/f",
    )


def _archive(bucket: S3Bucket, prefix: str = "arch/prod") -> S3Archive:
    return S3Archive(bucket.client(), bucket.name, prefix, part_bytes=MIN_PART)


def _keys(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def _uploads(client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _get(client: Any, bucket: str, key: str) -> bytes:
    data: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def _payload(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest() * 2048  # 64 KiB, not all one byte
    return (block * (size // len(block) + 1))[:size]


def _stream(part: Any, payload: bytes, chunk: int = 65536) -> None:
    """Write *payload* as the downloader does: through one reused buffer."""
    buffer = bytearray(chunk)
    for start in range(0, len(payload), chunk):
        piece = payload[start : start + chunk]
        buffer[: len(piece)] = piece
        part.write(memoryview(buffer)[: len(piece)])
        buffer[:] = b"\xff" * chunk  # reused at once: the part must have copied it


def test_a_multipart_payload_reaches_its_final_key_only_when_published(
    s3_bucket: S3Bucket,
) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    payload = _payload(12 * 1024 * 1024 + 123)  # three parts, the last a short one
    part = archive.begin(_export())
    _stream(part, payload)
    assert part.upload_id is not None
    assert _uploads(client, s3_bucket.name) == [part.path]
    assert part.path.startswith("arch/prod/.parts/123/") and part.path.endswith(".part")
    assert _keys(client, s3_bucket.name) == []  # nothing under any key while streaming
    part.seal()
    assert _uploads(client, s3_bucket.name) == []
    assert _keys(client, s3_bucket.name) == [part.path]  # complete, under the temporary key
    archived = _archived(payload)
    assert archive.verify(archived, part.path)
    assert not archive.verify(archived)  # the final key holds nothing yet
    archive.publish(part.path, archived)
    assert _keys(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]
    assert _get(client, s3_bucket.name, f"arch/prod/{FINAL}") == payload
    assert archive.verify(archived)


def test_a_small_payload_is_one_put_and_reads_back(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket, ""), s3_bucket.client()
    part = archive.begin(_export())
    part.write(b'[{"a": 1}]')
    assert part.upload_id is None  # less than a part: no multipart upload at all
    with part.read_back() as stream:  # validation reads it back before the seal
        assert stream.read() == b'[{"a": 1}]'
    part.seal()
    assert part.path.startswith(".parts/123/")
    archive.publish(part.path, _archived(b'[{"a": 1}]'))
    assert _keys(client, s3_bucket.name) == [FINAL]


def test_restart_discards_what_was_written(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    part = archive.begin(_export())
    _stream(part, _payload(MIN_PART + 10))
    first_upload = part.upload_id
    assert first_upload is not None
    part.restart()  # a retry of the download starts from byte zero
    assert _uploads(client, s3_bucket.name) == []
    part.write(b"[]")
    part.seal()
    assert _get(client, s3_bucket.name, part.path) == b"[]"
    part.restart()  # after a read-back or a seal too: the temporary object goes
    assert _keys(client, s3_bucket.name) == []


def test_discard_leaves_nothing(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    part = archive.begin(_export())
    _stream(part, _payload(MIN_PART * 2))
    part.discard()
    assert _uploads(client, s3_bucket.name) == []
    assert _keys(client, s3_bucket.name) == []


def test_an_interrupted_upload_leaves_no_final_object_and_a_new_attempt_clears_it(
    s3_bucket: S3Bucket,
) -> None:
    client = s3_bucket.client()
    payload = _payload(MIN_PART * 2 + 7)
    dead = _archive(s3_bucket).begin(_export())  # a daemon that dies mid-upload ...
    _stream(dead, payload[: MIN_PART + 5])
    sealed = _archive(s3_bucket).begin(_export("124"))  # ... and one sealed, never published
    sealed.write(b"[1]")
    sealed.seal()
    other = _archive(s3_bucket).begin(_export("999"))  # another export's: never touched
    _stream(other, payload[: MIN_PART + 5])
    assert dead.path in _uploads(client, s3_bucket.name)
    assert not any(key.startswith("arch/prod/GetNews") for key in _keys(client, s3_bucket.name))

    archive = _archive(s3_bucket)  # the restart (or the daemon that takes over)
    part = archive.begin(_export())
    assert dead.path not in _uploads(client, s3_bucket.name)
    _stream(part, payload)
    part.seal()
    archive.publish(part.path, _archived(payload))
    assert archive.begin(_export("124")).path != sealed.path
    assert sealed.path not in _keys(client, s3_bucket.name)
    assert _uploads(client, s3_bucket.name) == [other.path]
    assert _keys(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]
    assert _get(client, s3_bucket.name, f"arch/prod/{FINAL}") == payload


def test_publish_again_after_a_crash_between_copy_and_delete(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    part = archive.begin(_export())
    part.write(b"[1, 2]")
    part.seal()
    archived = _archived(b"[1, 2]")
    final = f"arch/prod/{FINAL}"
    client.copy_object(
        Bucket=s3_bucket.name, Key=final, CopySource={"Bucket": s3_bucket.name, "Key": part.path}
    )  # the copy happened, the process died before the part was deleted
    archive.publish(part.path, archived)  # the 412 finds the same payload: published
    assert _keys(client, s3_bucket.name) == [final]


def test_publish_never_overwrites_another_object(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    final = f"arch/prod/{FINAL}"
    client.put_object(Bucket=s3_bucket.name, Key=final, Body=b"[9]")
    part = archive.begin(_export())
    part.write(b"[1]")
    part.seal()
    with pytest.raises(ArchiveError, match="already holds another object"):
        archive.publish(part.path, _archived(b"[1]"))
    assert _get(client, s3_bucket.name, final) == b"[9]"


def test_verify_checks_size_and_sha256(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    client.put_object(Bucket=s3_bucket.name, Key=f"arch/prod/{FINAL}", Body=b"[1]")
    assert archive.verify(_archived(b"[1]"))
    assert not archive.verify(_archived(b"[2]"))  # same size, another hash
    assert not archive.verify(_archived(b"[10]"))  # another size
    assert not archive.verify(_archived(b"[1]"), "arch/prod/missing")


def test_the_manifest_is_one_object_per_export_written_once(s3_bucket: S3Bucket) -> None:
    archive, client = _archive(s3_bucket), s3_bucket.client()
    archived = _archived(b"[1]")
    export = _export()
    archive.append_manifest(export, archived, NOW)
    key = "arch/prod/manifest/GetNewsletterContactDataSummaryAsync/2026/11/stat-42_job-123.json"
    assert _keys(client, s3_bucket.name) == [key]
    entry = json.loads(_get(client, s3_bucket.name, key))
    assert entry["path"] == FINAL  # relative to the prefix
    assert (entry["job_id"], entry["sha256"], entry["bytes"]) == ("123", archived.sha256, 3)
    assert entry["archived_at"] == NOW.isoformat()
    archive.append_manifest(export, archived, NOW + timedelta(hours=1))  # a resumed attempt
    assert json.loads(_get(client, s3_bucket.name, key))["archived_at"] == NOW.isoformat()
    with pytest.raises(ArchiveError, match="manifest of another payload"):
        archive.append_manifest(export, _archived(b"[2]"), NOW)


def test_ensure_writable_names_a_missing_bucket(s3_bucket: S3Bucket) -> None:
    _archive(s3_bucket).ensure_writable()
    assert _keys(s3_bucket.client(), s3_bucket.name) == []
    missing = S3Archive(s3_bucket.client(), "no-such-bucket-here", "p")
    with pytest.raises(ArchiveError, match="there is no bucket 'no-such-bucket-here'"):
        missing.ensure_writable()


def test_a_client_from_the_settings_verifies_the_endpoint(s3_bucket: S3Bucket) -> None:
    def settings(ca_file: Any) -> S3ArchiveSettings:
        base = s3_bucket.ca_file.parent
        return S3ArchiveSettings(
            bucket=s3_bucket.name,
            prefix="p",
            endpoint_url=s3_bucket.endpoint_url,
            region=s3_bucket.region,
            access_key_id=Secret(
                "archive.access_key_id",
                file=str(s3_bucket.access_key_id_file),
                env=None,
                base_dir=base,
            ),
            secret_access_key=Secret(
                "archive.secret_access_key",
                file=str(s3_bucket.secret_access_key_file),
                env=None,
                base_dir=base,
            ),
            ca_file=ca_file,
            path_style=True,
        )

    S3Archive.from_settings(settings(s3_bucket.ca_file)).ensure_writable()
    # without the local CA the system's CAs alone do not trust the endpoint
    unverified = S3Archive(make_client(settings(None), attempts=1), s3_bucket.name, "p")
    with pytest.raises(ArchiveError, match=r"(?i)certificate verify failed"):
        unverified.ensure_writable()


def test_the_part_size_bounds_what_is_held(s3_bucket: S3Bucket) -> None:
    archive = _archive(s3_bucket)
    part = archive.begin(_export())
    _stream(part, _payload(3 * MIN_PART - 1))
    assert len(part._buffer) < MIN_PART  # the memory bound itself
    part.discard()
    assert PART_BYTES >= MIN_PART


_CHILD = """
import sys
from pathlib import Path
from inbox_poller.archive.s3 import S3Archive
from inbox_poller.config import S3ArchiveSettings, Secret
from tests.archive.test_s3 import _archived, _export, _payload

bucket, endpoint, region, key_id, secret, ca = sys.argv[1:]
settings = S3ArchiveSettings(
    bucket=bucket, prefix="arch/prod", endpoint_url=endpoint, region=region,
    access_key_id=Secret("k", file=key_id, env=None, base_dir=Path("/")),
    secret_access_key=Secret("s", file=secret, env=None, base_dir=Path("/")),
    ca_file=Path(ca), path_style=True,
)
archive = S3Archive.from_settings(settings)
archive.part_bytes = 5 * 1024 * 1024
part = archive.begin(_export())
part.write(_payload(12 * 1024 * 1024))
part.seal()
archive.publish(part.location, _archived(b""))
"""


def _crash_in_child(script: str, point: str, bucket: S3Bucket) -> None:
    """Run *script* against *bucket* in a child process that dies at crash *point*."""
    import os
    import subprocess
    import sys

    from inbox_poller.crashpoints import CRASH_ENV, CRASH_EXIT_STATUS

    env = {**os.environ, CRASH_ENV: point, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    files = [bucket.access_key_id_file, bucket.secret_access_key_file, bucket.ca_file]
    arguments = [bucket.name, bucket.endpoint_url, bucket.region, *map(str, files)]
    child = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == CRASH_EXIT_STATUS, child.stderr


def test_a_process_killed_mid_upload_leaves_only_an_upload_the_next_attempt_aborts(
    s3_bucket: S3Bucket,
) -> None:
    _crash_in_child(_CHILD, "archive:mid-upload", s3_bucket)
    client = s3_bucket.client()
    [left] = _uploads(client, s3_bucket.name)  # the first part was sent, then the kill
    assert left.startswith("arch/prod/.parts/123/")
    assert _keys(client, s3_bucket.name) == []  # nothing under the final key, or any key

    archive = _archive(s3_bucket)  # the restart
    payload = _payload(12 * 1024 * 1024)
    part = archive.begin(_export())
    _stream(part, payload)
    part.seal()
    archive.publish(part.location, _archived(payload))
    assert _uploads(client, s3_bucket.name) == []
    assert _keys(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]


def test_an_outage_mid_upload_is_a_retryable_failure_and_a_refusal_is_not(
    s3_bucket: S3Bucket,
) -> None:
    from inbox_poller.errors import ArchiveUnavailable

    archive = S3Archive(
        s3_bucket.server.client(attempts=1), s3_bucket.name, "p", part_bytes=MIN_PART
    )
    part = archive.begin(_export())
    _stream(part, _payload(MIN_PART - 1))
    s3_bucket.server.stop()
    try:
        with pytest.raises(ArchiveUnavailable, match="S3: cannot upload a part") as caught:
            part.write(b"xx")  # the first part is due: the endpoint is down
        assert caught.value.retryable  # the loop tries the download again later
    finally:
        s3_bucket.server.start()
    part.discard()


def test_a_refused_request_is_not_retryable(s3_bucket: S3Bucket, tmp_path: Path) -> None:
    from inbox_poller.errors import ArchiveUnavailable

    (tmp_path / "wrong-secret").write_text("not-the-secret-key\n", encoding="utf-8")
    settings = S3ArchiveSettings(
        bucket=s3_bucket.name,
        prefix="p",
        endpoint_url=s3_bucket.endpoint_url,
        region=s3_bucket.region,
        access_key_id=Secret(
            "k", file=str(s3_bucket.access_key_id_file), env=None, base_dir=tmp_path
        ),
        secret_access_key=Secret("s", file="wrong-secret", env=None, base_dir=tmp_path),
        ca_file=s3_bucket.ca_file,
        path_style=True,
    )
    part = S3Archive.from_settings(settings).begin  # listing the leftovers is refused
    with pytest.raises(ArchiveError) as refused:
        part(_export())
    assert not isinstance(refused.value, ArchiveUnavailable)
    assert not refused.value.retryable
    assert "not-the-secret-key" not in str(refused.value)


# ---- payloads over CopyObject's 5 GiB: a multipart copy (the limit lowered for the tests) ----

BIG = 12 * 1024 * 1024 + 123
"""Three ranges of MIN_PART, the last a short one."""


def _big_archive(bucket: S3Bucket) -> S3Archive:
    return S3Archive(
        bucket.client(),
        bucket.name,
        "arch/prod",
        part_bytes=MIN_PART,
        copy_limit=MIN_PART + 1,
        copy_part_bytes=MIN_PART,
    )


def _sealed(archive: S3Archive, payload: bytes) -> str:
    part = archive.begin(_export())
    _stream(part, payload)
    part.seal()
    return part.path


def test_a_payload_over_the_copy_limit_is_published_by_a_multipart_copy(
    s3_bucket: S3Bucket,
) -> None:
    archive, client = _big_archive(s3_bucket), s3_bucket.client()
    payload = _payload(BIG)
    archive.publish(_sealed(archive, payload), _archived(payload))
    assert _keys(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]
    assert _get(client, s3_bucket.name, f"arch/prod/{FINAL}") == payload
    head = client.head_object(Bucket=s3_bucket.name, Key=f"arch/prod/{FINAL}")
    assert head["ETag"].strip('"').endswith("-3")  # made of three copied ranges
    assert _uploads(client, s3_bucket.name) == []
    assert archive.verify(_archived(payload))


def test_a_multipart_copy_never_overwrites_and_accepts_its_own_earlier_copy(
    s3_bucket: S3Bucket,
) -> None:
    archive, client = _big_archive(s3_bucket), s3_bucket.client()
    payload = _payload(BIG)
    final = f"arch/prod/{FINAL}"
    client.put_object(Bucket=s3_bucket.name, Key=final, Body=b"someone else's")
    part = _sealed(archive, payload)
    with pytest.raises(ArchiveError, match="already holds another object"):
        archive.publish(part, _archived(payload))
    assert _get(client, s3_bucket.name, final) == b"someone else's"
    assert _uploads(client, s3_bucket.name) == []  # the refused copy was aborted

    client.put_object(Bucket=s3_bucket.name, Key=final, Body=payload)  # "an earlier attempt"
    archive.publish(part, _archived(payload))
    assert _keys(client, s3_bucket.name) == [final]
    assert _uploads(client, s3_bucket.name) == []


_COPY_CHILD = (
    _CHILD.rsplit("archive.part_bytes", 1)[0]
    + """
archive.part_bytes = archive.copy_part_bytes = 5 * 1024 * 1024
archive.copy_limit = 5 * 1024 * 1024 + 1
payload = _payload(12 * 1024 * 1024 + 123)
part = archive.begin(_export())
part.write(payload)
part.seal()
archive.publish(part.location, _archived(payload))
"""
)


def test_a_process_killed_mid_copy_leaves_an_upload_the_next_publish_aborts(
    s3_bucket: S3Bucket,
) -> None:
    _crash_in_child(_COPY_CHILD, "archive:mid-copy", s3_bucket)
    client = s3_bucket.client()
    assert _uploads(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]  # one range copied
    [part] = _keys(client, s3_bucket.name)  # the sealed part only: no final object
    assert part.startswith("arch/prod/.parts/123/")

    archive = _big_archive(s3_bucket)  # the restart: the export is verified, its part kept
    payload = _payload(BIG)
    assert archive.verify(_archived(payload), part)
    archive.publish(part, _archived(payload))
    assert _uploads(client, s3_bucket.name) == []
    assert _keys(client, s3_bucket.name) == [f"arch/prod/{FINAL}"]
    assert _get(client, s3_bucket.name, f"arch/prod/{FINAL}") == payload
