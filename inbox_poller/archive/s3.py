"""The archive on an S3 bucket (``[archive] url = "s3://bucket/prefix"``; issue 14).

The same guarantees as the directory (docs/reliability.md §3.6), with S3's tools; the
layout under the prefix is the directory's::

    <prefix>/
        <method>/<YYYY>/<MM>/<target>_job-<job_id>.<json|csv|xml>   the payloads
        manifest/<method>/<YYYY>/<MM>/<target>_job-<job_id>.json    one manifest line each
        .parts/<job_id>/<random>.part                             uploads under way

* **The part.** A download streams into :class:`S3Part` (a ``ports.PayloadSink``): the
  bytes are buffered up to :data:`PART_BYTES` and sent as one part of a multipart upload
  to the part's temporary key, so memory stays bounded whatever the payload's size (a
  payload smaller than one part is sent with one ``PutObject`` when sealed). The upload
  is completed when the part is sealed (or read back for validation), under the
  temporary key only: nothing is ever written under the final key by a download.
* **Publishing** is the rename: a server-side ``CopyObject`` from the temporary key to the
  final key with ``If-None-Match: *``, so an object already there is never overwritten
  (a 412 means an earlier attempt published it: it counts when its size and SHA-256 are
  the export's), then the temporary object is deleted.
* **What a dead attempt left** (an incomplete multipart upload, a completed temporary
  object) is under ``.parts/<job_id>/``: :meth:`S3Archive.begin` aborts and deletes it
  before a new attempt starts, so no bucket lifecycle rule is needed, and no daemon ever
  sweeps another's uploads (only the one that claimed the export begins it).
* **The manifest** is one small JSON object per export (the fields of a
  ``manifest.jsonl`` line), written with ``If-None-Match: *``: writers never conflict, a
  repeat finds its own object and writes nothing, and DuckDB reads them all with one
  glob, ``read_json('s3://bucket/prefix/manifest/**/*.json')``. Its ``path`` is the
  payload's key relative to the prefix.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import boto3
import botocore.exceptions
from botocore.config import Config as BotoConfig

from inbox_poller import crashpoints
from inbox_poller.archive import describe, manifest_json, manifest_line, relative_path
from inbox_poller.archive_reader import (
    PART_SUFFIX,
    PARTS_DIR,
    manifest_object_path,
)
from inbox_poller.config import S3ArchiveSettings
from inbox_poller.errors import ArchiveError, ArchiveUnavailable
from inbox_poller.models import ArchivedFile, DownloadResult, Export

S3Client: TypeAlias = Any
"""boto3's S3 client (boto3 ships no types)."""

logger = logging.getLogger("inbox_poller.archive")

PART_BYTES = 8 * 1024 * 1024
"""The size of each part of a multipart upload (S3's minimum is 5 MiB, except the last):
the most a part holds in memory while a download streams into it."""
COPY_LIMIT = 5 * 1024**3
"""The largest object one ``CopyObject`` copies (S3's limit): a larger payload is
published by a multipart copy (``UploadPartCopy``), :meth:`S3Archive.publish`."""
COPY_PART_BYTES = 512 * 1024**2
"""The range each ``UploadPartCopy`` copies (server-side: no byte passes the daemon)."""
_MAX_PARTS = 10_000
_HASH_CHUNK_BYTES = 1024 * 1024
_MAX_MANIFEST_OBJECT_BYTES = 1024 * 1024


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: botocore.exceptions.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


_TRANSIENT_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "Throttling", "ServiceUnavailable", "InternalError"}
)
_TRANSIENT_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)


def _transient(exc: Exception) -> bool:
    """Whether *exc* is the endpoint failing for a moment, not a refusal or a bad setting
    (a certificate that does not verify, missing credentials, access denied)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _status(exc) >= 500 or _code(exc) in _TRANSIENT_CODES
    if isinstance(exc, botocore.exceptions.SSLError):
        return False
    return isinstance(exc, _TRANSIENT_ERRORS)


def _failed(what: str, exc: Exception) -> ArchiveError:
    """One message for a failed S3 request: what was tried, and the service's own code;
    an :class:`ArchiveUnavailable` (tried again) when the endpoint failed for a moment."""
    if isinstance(exc, botocore.exceptions.ClientError):
        detail = f"{_code(exc) or _status(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
    else:
        detail = str(exc) or type(exc).__name__
    kind = ArchiveUnavailable if _transient(exc) else ArchiveError
    return kind(f"S3: cannot {what}: {detail.strip().rstrip(':')}")


def _not_found(exc: botocore.exceptions.ClientError) -> bool:
    return _code(exc) in ("404", "NoSuchKey", "NotFound", "NoSuchUpload") or _status(exc) == 404


def _precondition_failed(exc: botocore.exceptions.ClientError) -> bool:
    return _code(exc) == "PreconditionFailed" or _status(exc) == 412


def trust_bundle(ca_file: Path | None) -> str | bool:
    """Return botocore's ``verify``: True (the system's CAs), or a private bundle file
    holding the system's CAs and *ca_file* (botocore takes one file, which replaces the
    defaults; the extra anchor must add to them, as ``net.client_context`` does). The
    file is made once per process and CA, and deleted at exit."""
    if ca_file is None:
        return True
    return _bundle_file(ca_file)


@functools.cache
def _bundle_file(ca_file: Path) -> str:
    paths = ssl.get_default_verify_paths()
    parts: list[bytes] = []
    for name in (paths.cafile, paths.openssl_cafile):
        if name and Path(name).is_file():
            parts.append(Path(name).read_bytes())
            break
    try:
        parts.append(ca_file.read_bytes())
    except OSError as exc:
        raise ArchiveError(f"archive.ca_file: cannot read {ca_file}: {exc.strerror}") from exc
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept for the process's lifetime)
        prefix="inbox-poller-s3-ca-", suffix=".pem", delete=False
    )
    with handle:
        handle.write(b"\n".join(parts))
    atexit.register(_remove, handle.name)
    return handle.name


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def make_client(
    settings: S3ArchiveSettings, *, attempts: int = 3, timeout_s: float = 30.0
) -> S3Client:
    """Build the S3 client *settings* name; the keys are read here and never logged."""
    keys: dict[str, str] = {}
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        keys = {
            "aws_access_key_id": settings.access_key_id.read(),
            "aws_secret_access_key": settings.secret_access_key.read(),
        }
    session = boto3.session.Session(region_name=settings.region, **keys)
    client: S3Client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        verify=trust_bundle(settings.ca_file),
        config=BotoConfig(
            s3={"addressing_style": "path" if settings.path_style else "auto"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
        ),
    )
    return client


class _Body(io.RawIOBase):
    """An object's body as a stream whose failures are ``OSError`` (botocore raises its own)."""

    def __init__(self, body: Any, where: str) -> None:
        self._body = body
        self._where = where

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data: bytes = self._body.read(None if size is None or size < 0 else size)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise OSError(f"S3: cannot read {self._where}: {exc}") from exc
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()


class S3Objects:
    """A bucket, read only: implements ``archive_reader.BucketObjects`` over boto3, for
    ``BucketReader`` and ``verify_bucket`` (``inbox-poller archive verify``)."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}"

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        try:
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield str(item["Key"]), int(item["Size"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise OSError(str(_failed(f"list {self.url}/{prefix}", exc))) from exc

    def open(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                raise FileNotFoundError(f"{self.url}/{key}: no such object") from exc
            raise OSError(str(_failed(f"read {self.url}/{key}", exc))) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise OSError(str(_failed(f"read {self.url}/{key}", exc))) from exc
        return io.BufferedReader(_Body(body, f"{self.url}/{key}"), buffer_size=1 << 16)

    def uploads(self, prefix: str) -> Iterator[str]:
        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    yield str(upload["Key"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise OSError(str(_failed(f"list the uploads under {self.url}/{prefix}", exc))) from exc


class S3Part:
    """A payload under way to its temporary key; implements ``ports.PayloadSink``.

    Parts of :data:`PART_BYTES` are uploaded as they fill; :meth:`seal` (or
    :meth:`read_back`) completes the upload under the temporary key :attr:`path`.
    """

    def __init__(
        self, client: S3Client, bucket: str, key: str, part_bytes: int = PART_BYTES
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.path = key
        """The temporary key (the ledger keeps it as the export's part path)."""
        self.part_bytes = part_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._written = 0
        self._complete = False

    @property
    def location(self) -> str:
        """The temporary key, as the ledger records it."""
        return self.path

    @property
    def upload_id(self) -> str | None:
        """The multipart upload under way, if one was started."""
        return self._upload_id

    def write(self, data: bytes | memoryview) -> None:
        if self._complete:
            raise ArchiveError(f"S3: {self.path} is already complete")
        self._buffer += data  # a copy: the caller reuses its memoryview
        if self._written == 0 and len(data):
            crashpoints.crash_point("download:mid-body")
        self._written += len(data)
        while len(self._buffer) >= self.part_bytes:
            chunk = bytes(self._buffer[: self.part_bytes])
            del self._buffer[: self.part_bytes]
            self._upload_part(chunk)

    def _upload_part(self, chunk: bytes) -> None:
        try:
            if self._upload_id is None:
                started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.path)
                self._upload_id = str(started["UploadId"])
            number = len(self._parts) + 1
            sent = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.path,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=chunk,
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"upload a part of {self.path}", exc) from exc
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        if number == 1:
            crashpoints.crash_point("archive:mid-upload")

    def restart(self) -> None:
        """Discard everything written so far (a retry starts from byte zero)."""
        self._drop()
        self._buffer = bytearray()
        self._parts = []
        self._written = 0
        self._complete = False

    def _finish(self) -> None:
        """Complete the object under the temporary key (once)."""
        if self._complete:
            return
        try:
            if self._upload_id is None:
                self.client.put_object(Bucket=self.bucket, Key=self.path, Body=bytes(self._buffer))
            else:
                if self._buffer or not self._parts:
                    self._upload_part(bytes(self._buffer))
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.path,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                self._upload_id = None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"complete {self.path}", exc) from exc
        self._buffer = bytearray()
        self._complete = True

    def read_back(self) -> BinaryIO:
        """Complete the temporary object and stream it from its start (the caller closes it)."""
        self._finish()
        try:
            body: BinaryIO = self.client.get_object(Bucket=self.bucket, Key=self.path)["Body"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"read back {self.path}", exc) from exc
        return body

    def seal(self) -> None:
        """Complete the temporary object: every byte written is stored."""
        self._finish()

    def discard(self) -> None:
        """Abort the upload and delete the temporary object; never raises."""
        self._drop()

    def _drop(self) -> None:
        with contextlib.suppress(
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
        ):
            if self._upload_id is not None:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.path, UploadId=self._upload_id
                )
            self._upload_id = None
            if self._complete:
                self.client.delete_object(Bucket=self.bucket, Key=self.path)


class S3Archive:
    """The archive under ``s3://bucket/prefix``: keys, parts, publishing and the manifest."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_bytes: int = PART_BYTES,
        copy_limit: int = COPY_LIMIT,
        copy_part_bytes: int = COPY_PART_BYTES,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_bytes = part_bytes
        self.copy_limit = copy_limit
        """Payloads larger than this are published by a multipart copy."""
        self.copy_part_bytes = copy_part_bytes

    @classmethod
    def from_settings(cls, settings: S3ArchiveSettings) -> S3Archive:
        return cls(make_client(settings), settings.bucket, settings.prefix)

    def objects(self) -> S3Objects:
        """The bucket, read only (``archive verify``, the readers)."""
        return S3Objects(self.client, self.bucket)

    def key(self, relative: str) -> str:
        """The object key of *relative* (a path under the prefix)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _parts_prefix(self, job_id: str) -> str:
        return self.key(f"{PARTS_DIR}/{job_id}/")

    def manifest_key(self, relative: str) -> str:
        """The key of the manifest object of the payload at *relative*."""
        return self.key(manifest_object_path(relative))

    def ensure_writable(self) -> None:
        """Prove the bucket reachable and an object writable (and deletable) under the prefix."""
        probe = self.key(f"{PARTS_DIR}/.write-test.{secrets.token_hex(4)}")
        try:
            # first, so that a missing bucket is named as such (some servers, SeaweedFS
            # among them, create a bucket on the first write to it)
            self.client.head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                raise ArchiveError(f"S3: there is no bucket {self.bucket!r}") from exc
            raise _failed(f"reach the bucket {self.bucket!r}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _failed(f"reach the bucket {self.bucket!r}", exc) from exc
        try:
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=probe)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"write to s3://{self.bucket}/{self.prefix}", exc) from exc

    def relative_path(self, export: Export, fmt: str = "json") -> str:
        return relative_path(export, fmt)

    def begin(self, export: Export) -> S3Part:
        """Clear what an earlier attempt at *export* left, and start a new part for it."""
        self.abort_leftovers(str(export.job_id))
        relative_path(export)  # refuse an export the layout cannot name before any upload
        key = f"{self._parts_prefix(str(export.job_id))}{secrets.token_hex(6)}{PART_SUFFIX}"
        return S3Part(self.client, self.bucket, key, self.part_bytes)

    def abort_leftovers(
        self, job_id: str, keep: str | None = None, before: datetime | None = None
    ) -> list[str]:
        """Abort the incomplete uploads and delete the objects under *job_id*'s parts
        prefix (except the key *keep*, and, with *before*, anything started since);
        return the keys cleared."""
        prefix = self._parts_prefix(job_id)
        cleared: list[str] = []

        def old(started: datetime | None) -> bool:
            return before is None or (started is not None and started < before)

        try:
            pages = self.client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    if not old(upload.get("Initiated")):
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    cleared.append(upload["Key"])
            listing = self.client.get_paginator("list_objects_v2")
            for page in listing.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if item["Key"] != keep and old(item.get("LastModified")):
                        self.client.delete_object(Bucket=self.bucket, Key=item["Key"])
                        cleared.append(item["Key"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"clear what an earlier attempt left under {prefix}", exc) from exc
        for key in cleared:
            logger.info("archive: removing %s left by an interrupted upload", key)
        return cleared

    def remove_leftovers(self, keep: set[str]) -> list[str]:
        """Remove nothing: what a dead attempt left under ``.parts/<job_id>/`` is cleared
        by :meth:`begin` when the export is next attempted, by whichever daemon claimed
        it; a sweep here would abort the uploads of other daemons under way."""
        del keep
        return []

    def leftover_jobs(self) -> list[str]:
        """The job IDs with an object or an incomplete upload under ``.parts/``."""
        root = self.key(f"{PARTS_DIR}/")
        jobs: set[str] = set()
        try:
            listing = self.client.get_paginator("list_objects_v2")
            for page in listing.paginate(Bucket=self.bucket, Prefix=root, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    jobs.add(str(common["Prefix"])[len(root) :].rstrip("/"))
            uploads = self.client.get_paginator("list_multipart_uploads")
            for page in uploads.paginate(Bucket=self.bucket, Prefix=root):
                for upload in page.get("Uploads", []):
                    job, _, rest = str(upload["Key"])[len(root) :].partition("/")
                    if rest:
                        jobs.add(job)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"list {root}", exc) from exc
        return sorted(jobs)

    def clear_leftovers(self, job_id: str, before: datetime) -> list[str]:
        """Clear what is under ``.parts/<job_id>/`` and was started before *before* (an
        upload started since, after the export was tried again, is left alone)."""
        return self.abort_leftovers(job_id, before=before)

    def describe(self, export: Export, result: DownloadResult) -> ArchivedFile:
        return describe(export, result)

    def publish(self, part_key: str, archived: ArchivedFile) -> None:
        """Copy the sealed part to its final key unless an object is there; delete the part.

        :raises ArchiveError: the copy failed, or a different object holds the final key.
        """
        final = self.key(archived.path)
        try:
            if archived.bytes > self.copy_limit:
                self._copy_in_parts(part_key, final, archived.bytes)
            else:
                self.client.copy_object(
                    Bucket=self.bucket,
                    Key=final,
                    CopySource={"Bucket": self.bucket, "Key": part_key},
                    IfNoneMatch="*",
                )
        except botocore.exceptions.ClientError as exc:
            if not _precondition_failed(exc):
                raise _failed(f"copy {part_key} to {final}", exc) from exc
            if not self.verify(archived):
                raise ArchiveError(
                    f"S3: {final} already holds another object; it is left as it is"
                ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _failed(f"copy {part_key} to {final}", exc) from exc
        crashpoints.crash_point("archive:after-rename")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=part_key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"delete {part_key}", exc) from exc

    def _copy_in_parts(self, source: str, final: str, size: int) -> None:
        """Copy *source* to *final* by ranges (``UploadPartCopy``), completed with
        ``If-None-Match: *``: what ``CopyObject`` does, for an object over its 5 GiB limit.

        An upload an earlier attempt left at *final* (it died mid-copy) is aborted first:
        only the daemon that claimed the export publishes it. A failure aborts this
        upload (best effort; the next attempt's would anyway) and raises botocore's error.
        """
        self._abort_uploads_at(final)
        step = max(self.copy_part_bytes, -(-size // _MAX_PARTS))
        upload_id = str(
            self.client.create_multipart_upload(Bucket=self.bucket, Key=final)["UploadId"]
        )
        try:
            parts = []
            for number, start in enumerate(range(0, size, step), start=1):
                copied = self.client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=final,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{min(start + step, size) - 1}",
                )
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
                if number == 1:
                    crashpoints.crash_point("archive:mid-copy")
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=final,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            with contextlib.suppress(
                botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
            ):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=final, UploadId=upload_id
                )
            raise

    def _abort_uploads_at(self, key: str) -> None:
        pages = self.client.get_paginator("list_multipart_uploads")
        for page in pages.paginate(Bucket=self.bucket, Prefix=key):
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
                    logger.info("archive: removing an unfinished copy to %s", key)

    def drop_part(self, part: str) -> None:
        """Delete the temporary object *part* (a crash came between the copy and its
        delete); never raises."""
        with contextlib.suppress(
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError
        ):
            self.client.delete_object(Bucket=self.bucket, Key=part)

    def verify(self, archived: ArchivedFile, candidate: str | None = None) -> bool:
        """Return whether *candidate* (default: the final key) holds exactly *archived*."""
        key = candidate or self.key(archived.path)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            if int(head["ContentLength"]) != archived.bytes:
                return False
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            digest = hashlib.sha256()
            with contextlib.closing(body):
                while chunk := body.read(_HASH_CHUNK_BYTES):
                    digest.update(chunk)
        except botocore.exceptions.ClientError as exc:
            if _not_found(exc):
                return False
            raise _failed(f"read {key}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _failed(f"read {key}", exc) from exc
        return digest.hexdigest() == archived.sha256

    def append_manifest(
        self,
        export: Export,
        archived: ArchivedFile,
        now: datetime,
        record: Callable[[int], None] | None = None,
    ) -> None:
        """Write *export*'s manifest object once, even across crashes and several writers.

        ``If-None-Match: *`` makes the write happen at most once; a 412 finds the object
        an earlier attempt wrote, which must name the same job and SHA-256. *record* (the
        directory's manifest offset) has nothing to record here and is not called.
        """
        del record
        line = manifest_json(manifest_line(export, archived, now))
        crashpoints.crash_point("archive:before-manifest-line")
        self.put_manifest(archived.path, line)

    def _read_manifest(self, key: str) -> dict[str, Any]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                raw = body.read(_MAX_MANIFEST_OBJECT_BYTES + 1)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _failed(f"read {key}", exc) from exc
        try:
            entry = json.loads(raw) if len(raw) <= _MAX_MANIFEST_OBJECT_BYTES else None
        except ValueError:
            entry = None
        return entry if isinstance(entry, dict) else {}

    def put_manifest(self, path: str, line: str) -> bool:
        """Write *line* (one manifest line, JSON) as the manifest object of the payload at
        *path* unless one is there (the loop's :meth:`append_manifest`, and ``inbox-poller
        migrate``); return whether it wrote it.

        :raises ArchiveError: the key holds the manifest of another job or SHA-256.
        """
        entry = json.loads(line)
        key = self.manifest_key(path)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=(line.rstrip("\n") + "\n").encode("utf-8"),
                ContentType="application/json",
                IfNoneMatch="*",
            )
            return True
        except botocore.exceptions.ClientError as exc:
            if not _precondition_failed(exc):
                raise _failed(f"write {key}", exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise _failed(f"write {key}", exc) from exc
        found = self._read_manifest(key)
        if found.get("job_id") != entry.get("job_id") or found.get("sha256") != entry.get("sha256"):
            raise ArchiveError(
                f"S3: {key} already holds the manifest of another payload; it is left as it is"
            )
        return False
