"""The on-disk archive: atomic, private payload files and an append-only manifest.

Layout (built only from validated IDs, never from names found in mail or URLs)::

    <archive.dir>/
        manifest.jsonl                      one JSON line per archived payload
        <method>/<YYYY>/<MM>/stat-<stat>_job-<job_id>.json

``YYYY/MM`` is the UTC month the export was submitted. A payload is written to
``.<job_id>.<random>.part`` in its final directory (``O_CREAT|O_EXCL|O_NOFOLLOW``,
mode 0600), fsynced, renamed over the final name, and the directory fsynced
(docs/reliability.md §3.6). Only then does the manifest get its line (fsynced too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from inbox_poller import crashpoints
from inbox_poller.errors import ArchiveError
from inbox_poller.models import (
    DATE_RE,
    JOB_ID_RE,
    STAT_ID_RE,
    ArchivedFile,
    DownloadResult,
    Export,
)

MANIFEST_NAME = "manifest.jsonl"
WRITE_BEHIND_BYTES = 64 * 1024 * 1024
"""Flush a part file to disk every this many bytes while it is written (from the
download's writer thread), so the final fsync has little left to do and does not add
the whole payload's write-back to the end of the download."""
PART_SUFFIX = ".part"
_METHOD_RE = JOB_ID_RE
_HASH_CHUNK_BYTES = 1024 * 1024


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in bounded chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class PartFile:
    """A private temporary file in the final directory; implements ``PayloadSink``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written = 0
        try:
            self._fd: int | None = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise ArchiveError(f"cannot create {path}: {exc.strerror}") from exc

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ArchiveError(f"{self.path} is already closed")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise ArchiveError(f"cannot write {self.path}: {exc.strerror}") from exc
        if self._written == 0:
            crashpoints.crash_point("download:mid-body")
        before = self._written
        self._written += len(data)
        if self._written // WRITE_BEHIND_BYTES != before // WRITE_BEHIND_BYTES:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                raise ArchiveError(f"cannot flush {self.path}: {exc.strerror}") from exc

    def restart(self) -> None:
        if self._fd is None:
            raise ArchiveError(f"{self.path} is already closed")
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise ArchiveError(f"cannot truncate {self.path}: {exc.strerror}") from exc
        self._written = 0

    def read_back(self) -> BinaryIO:
        """Open the bytes written so far for reading (the caller closes the file)."""
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise ArchiveError(f"cannot read back {self.path}: {exc.strerror}") from exc

    def seal(self) -> None:
        """Flush the payload to stable storage and close the file."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise ArchiveError(f"cannot fsync {self.path}: {exc.strerror}") from exc
        finally:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and delete the file; never raises."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.path.unlink()


@dataclass(frozen=True)
class ManifestLine:
    """One line of ``manifest.jsonl``; the field names are a public contract."""

    job_id: str
    stat: str
    method: str
    startdate: str | None
    enddate: str | None
    path: str
    bytes: int
    sha256: str
    records: int | None
    top_level: str
    message_id: str | None
    submitted_at: str | None
    archived_at: str
    export_id: int
    source: str


class Archive:
    """The archive directory: final paths, part files, publishing and the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure_writable(self) -> None:
        """Create the archive directory (0700) and prove a private file can be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.root / f".write-test.{secrets.token_hex(4)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise ArchiveError(f"archive directory {self.root} is not writable: {exc}") from exc

    def relative_path(self, export: Export) -> str:
        """Return the final path of *export*'s payload, relative to the archive root."""
        request = export.request
        job_id = export.job_id or ""
        if not JOB_ID_RE.match(job_id):
            raise ArchiveError(f"export {export.export_id}: job ID {job_id!r} is not archivable")
        if not STAT_ID_RE.match(request.stat) or not _METHOD_RE.match(request.method):
            raise ArchiveError(f"export {export.export_id}: stat or method is not archivable")
        when = export.submitted_at or export.created_at
        return f"{request.method}/{when:%Y}/{when:%m}/stat-{request.stat}_job-{job_id}.json"

    def _final(self, relative: str) -> Path:
        final = (self.root / relative).resolve()
        if not final.is_relative_to(self.root.resolve()):
            raise ArchiveError(f"{relative!r} would leave the archive directory")
        return final

    def begin(self, export: Export) -> PartFile:
        """Create the private temporary file the download is streamed into."""
        final = self._final(self.relative_path(export))
        try:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ArchiveError(f"cannot create {final.parent}: {exc.strerror}") from exc
        name = f".{export.job_id}.{secrets.token_hex(6)}{PART_SUFFIX}"
        return PartFile(final.parent / name)

    def describe(self, export: Export, result: DownloadResult) -> ArchivedFile:
        return ArchivedFile(
            path=self.relative_path(export),
            bytes=result.bytes,
            sha256=result.sha256,
            records=result.records,
            top_level=result.top_level,
            source=result.final_url,
        )

    def publish(self, part_path: Path, archived: ArchivedFile) -> None:
        """Rename the sealed part file over its final name and make the rename durable."""
        final = self._final(archived.path)
        try:
            os.replace(part_path, final)
            crashpoints.crash_point("archive:after-rename")
            _fsync_dir(final.parent)
        except OSError as exc:
            raise ArchiveError(f"cannot move the payload into {final}: {exc.strerror}") from exc

    def verify(self, archived: ArchivedFile, candidate: Path | None = None) -> bool:
        """Return whether *candidate* (default: the final file) holds exactly *archived*."""
        path = candidate or self._final(archived.path)
        try:
            if path.is_symlink() or not path.is_file():
                return False
            if path.stat().st_size != archived.bytes:
                return False
            return sha256_of(path) == archived.sha256
        except OSError:
            return False

    def final_path(self, archived: ArchivedFile) -> Path:
        return self._final(archived.path)

    def append_manifest(self, export: Export, archived: ArchivedFile, now: datetime) -> None:
        """Append *export*'s line unless the manifest already has it (a resumed crash); fsync."""
        line = manifest_line(export, archived, now)
        manifest = self.root / MANIFEST_NAME
        if self._manifest_has(manifest, line.job_id, line.sha256):
            return
        text = manifest_json(line) + "\n"
        if self._ends_torn(manifest):
            text = "\n" + text  # a crash tore the last line: never glue ours onto it
        try:
            fd = os.open(
                manifest,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ArchiveError(f"cannot append to {manifest}: {exc.strerror}") from exc

    @staticmethod
    def _ends_torn(manifest: Path) -> bool:
        try:
            with manifest.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() == 0:
                    return False
                handle.seek(-1, os.SEEK_END)
                return handle.read(1) != b"\n"
        except FileNotFoundError:
            return False

    @staticmethod
    def _manifest_has(manifest: Path, job_id: str, sha256: str) -> bool:
        try:
            with manifest.open("r", encoding="utf-8") as handle:
                for raw in handle:
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue  # a torn last line from a crash is ignored, never fatal
                    if entry.get("job_id") == job_id and entry.get("sha256") == sha256:
                        return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArchiveError(f"cannot read {manifest}: {exc.strerror}") from exc
        return False

    def stale_parts(self, keep: set[Path]) -> list[Path]:
        """Return part files left by an interrupted run, except those in *keep*."""
        if not self.root.is_dir():
            return []
        return [
            path
            for path in self.root.rglob(f".*{PART_SUFFIX}")
            if path.is_file() and path.resolve() not in keep
        ]


def manifest_json(line: ManifestLine) -> str:
    """Return *line* as the one line of JSON the manifest holds (without the newline)."""
    return json.dumps(asdict(line), sort_keys=False, ensure_ascii=False)


def manifest_line(export: Export, archived: ArchivedFile, now: datetime) -> ManifestLine:
    """Build the manifest entry for *export* from the ledger's view of it."""
    request = export.request
    for value in (request.startdate, request.enddate):
        if value is not None and not DATE_RE.match(value):
            raise ArchiveError(f"export {export.export_id}: date {value!r} is not YYYYMMDD")
    assert export.job_id is not None
    return ManifestLine(
        job_id=export.job_id,
        stat=request.stat,
        method=request.method,
        startdate=request.startdate,
        enddate=request.enddate,
        path=archived.path,
        bytes=archived.bytes,
        sha256=archived.sha256,
        records=archived.records,
        top_level=archived.top_level,
        message_id=export.message_id,
        submitted_at=export.submitted_at.isoformat() if export.submitted_at else None,
        archived_at=now.isoformat(),
        export_id=export.export_id,
        source=archived.source,
    )
