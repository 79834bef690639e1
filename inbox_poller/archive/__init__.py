"""The on-disk archive: atomic, private payload files and an append-only manifest.

Layout (built only from validated IDs, never from names found in mail or URLs)::

    <archive.dir>/
        manifest.jsonl                      one JSON line per archived payload
        <method>/<YYYY>/<MM>/<target>_job-<job_id>.<json|csv|xml>

``<target>`` names what was exported (``methods.target``: ``stat-4711``, ``list-3``,
``segment-5+6``, ``tag-9``); the extension is the format that arrived.

``YYYY/MM`` is the UTC month the export was submitted. A payload is written to
``.<job_id>.<random>.part`` in its final directory (``O_CREAT|O_EXCL|O_NOFOLLOW``),
fsynced, renamed over the final name, and the directory fsynced (docs/reliability.md
§3.6). Only then does the manifest get its line (fsynced too). The layout and the line's
fields are the public contract of ``archive_reader``, which reads them.

Files are private (0600) and every directory the archive creates, the archive directory
and its missing parents included, is 0700, whatever the umask. With ``archive.group``,
files are 0640 and directories 0750, owned by that group (the process must be a member:
under systemd, ``Group=``; docs/systemd.md).

The manifest is appended to, never read whole: before its line is written, the line's
offset is handed to the caller to record (the ledger commits it), so a resumed crash
looks at that one offset (docs/reliability.md §3.6).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from inbox_poller import crashpoints
from inbox_poller.archive_reader import MANIFEST_NAME, MAX_LINE_BYTES, PART_SUFFIX, ManifestLine
from inbox_poller.errors import ArchiveError
from inbox_poller.methods import FORMATS, target
from inbox_poller.models import (
    CONTACT_DATA_METHOD,
    DATE_RE,
    JOB_ID_RE,
    MANIFEST_OFFSET_UNKNOWN,
    STAT_ID_RE,
    ArchivedFile,
    DownloadResult,
    Export,
)

logger = logging.getLogger("inbox_poller.archive")

WRITE_BEHIND_BYTES = 64 * 1024 * 1024
"""Flush a part file to disk every this many bytes while it is written, so the final
fsync has little left to do and does not add the whole payload's write-back to the end
of the download. The flush runs on a thread of its own (:class:`_Flusher`): the writer
never waits for the disk."""
_METHOD_RE = JOB_ID_RE
_TARGET_RE = re.compile(r"^[a-z]{1,16}-[0-9+]{1,100}(?:\+more)?\Z")
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


class Access:
    """Who may read the archive: its owner only, or its owner and one group."""

    def __init__(self, group: str | None = None) -> None:
        self.group = group
        self.gid: int | None = None
        if group is not None:
            try:
                self.gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ArchiveError(
                    f"archive.group: there is no group {group!r} on this system"
                ) from None
        self.file_mode = 0o600 if group is None else 0o640
        self.dir_mode = 0o700 if group is None else 0o750

    def apply(self, path: Path | int, mode: int) -> None:
        """Give *path* (or an open file descriptor) *mode* and the group, whatever the umask."""
        # chown only when the group differs: under the unit, Group= already gives new files
        # the group, and SystemCallFilter=~@privileged refuses chown itself (EPERM)
        try:
            if isinstance(path, int):
                os.fchmod(path, mode)
                if self.gid is not None and os.fstat(path).st_gid != self.gid:
                    os.fchown(path, -1, self.gid)
            else:
                os.chmod(path, mode, follow_symlinks=False)
                if self.gid is not None and os.lstat(path).st_gid != self.gid:
                    os.chown(path, -1, self.gid, follow_symlinks=False)
        except OSError as exc:
            what = path if isinstance(path, Path) else "a new file"
            hint = ""
            if self.gid is not None and exc.errno in (1, 22):  # EPERM, EINVAL
                hint = (
                    f" (to give files to group {self.group!r}, inbox-poller must be a member"
                    " of it: under systemd, Group= in the unit; docs/systemd.md)"
                )
            raise ArchiveError(
                f"cannot set the mode or group of {what}: {exc.strerror}{hint}"
            ) from exc

    def make_dirs(self, directory: Path) -> None:
        """Create *directory* and its missing parents, each with the archive's mode and group.

        :raises OSError: a directory cannot be created.
        :raises ArchiveError: its mode or group cannot be set.
        """
        missing: list[Path] = []
        current = directory
        while not current.is_dir() and current != current.parent:
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                os.mkdir(path, self.dir_mode)
            except FileExistsError:
                if path.is_dir():
                    continue  # created meanwhile (another download): leave it as it is
                if path != directory:  # a parent is a file, as os.makedirs reports it
                    error = os.strerror(errno.ENOTDIR)
                    raise NotADirectoryError(errno.ENOTDIR, error, str(path)) from None
                raise
            self.apply(path, self.dir_mode)


PRIVATE = Access()


class _Flusher:
    """``fdatasync`` one file on a thread of its own, whenever asked, while it is written.

    A failure is kept and raised by :meth:`check` (the writer's next write, or the seal):
    Linux reports a write-back error to one ``fsync`` of a file descriptor only, so one
    seen here must not be lost.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._asked = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.error: OSError | None = None

    def ask(self) -> None:
        """Flush soon (at most one flush waits behind the one under way)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="part-flush", daemon=True)
            self._thread.start()
        self._asked.set()

    def stop(self) -> None:
        """Wait for a flush under way; idempotent. Call before the descriptor is closed."""
        if self._thread is not None:
            self._stopping = True
            self._asked.set()
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            self._asked.wait()
            self._asked.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.error = self.error or exc


class PartFile:
    """A temporary file in the final directory; implements ``PayloadSink``.

    Created with the archive's file mode and group (0600 when no group is set).
    """

    def __init__(self, path: Path, access: Access = PRIVATE) -> None:
        self.path = path
        self._written = 0
        try:
            self._fd: int | None = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        except OSError as exc:
            raise ArchiveError(f"cannot create {path}: {exc.strerror}") from exc
        self._flusher = _Flusher(self._fd)
        if access is not PRIVATE:
            try:
                access.apply(self._fd, access.file_mode)
            except ArchiveError:
                self.discard()
                raise

    def write(self, data: bytes | memoryview) -> None:
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
        self._raise_flush_error()
        if self._written // WRITE_BEHIND_BYTES != before // WRITE_BEHIND_BYTES:
            self._flusher.ask()

    def _raise_flush_error(self) -> None:
        error = self._flusher.error
        if error is not None:
            raise ArchiveError(f"cannot flush {self.path}: {error.strerror}") from error

    @property
    def location(self) -> str:
        """The part file's path, as the ledger records it."""
        return str(self.path)

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
            self._flusher.stop()
            self._raise_flush_error()
            os.fsync(self._fd)
        except OSError as exc:
            raise ArchiveError(f"cannot fsync {self.path}: {exc.strerror}") from exc
        finally:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and delete the file; never raises."""
        if self._fd is not None:
            self._flusher.stop()
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.path.unlink()


class Archive:
    """The archive directory: final paths, part files, publishing and the manifest."""

    def __init__(self, root: Path, group: str | None = None) -> None:
        """*group* is ``archive.group``: files 0640 and directories 0750, owned by it.

        :raises ArchiveError: no such group.
        """
        self.root = root
        self.access = PRIVATE if group is None else Access(group)
        self._manifest_lock = threading.Lock()  # the download pool's threads append
        self._root_real: Path | None = None

    def ensure_writable(self) -> None:
        """Create the archive directory and prove a file can be written in it.

        With a group, the directory and the manifest get the group's modes (0750, 0640),
        so that setting ``archive.group`` later opens an existing archive's top to it.
        """
        try:
            self.access.make_dirs(self.root)
            probe = self.root / f".write-test.{secrets.token_hex(4)}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            probe.unlink()
        except OSError as exc:
            raise ArchiveError(f"archive directory {self.root} is not writable: {exc}") from exc
        if self.access is not PRIVATE:
            self.access.apply(self.root, self.access.dir_mode)
            manifest = self.root / MANIFEST_NAME
            if manifest.is_file() and not manifest.is_symlink():
                self.access.apply(manifest, self.access.file_mode)

    def relative_path(self, export: Export, fmt: str = "json") -> str:
        """Return the final path of *export*'s payload as *fmt*, relative to the archive root."""
        return relative_path(export, fmt)

    def _final(self, relative: str) -> Path:
        final = (self.root / relative).resolve()
        if not final.is_relative_to(self._resolved_root()):
            raise ArchiveError(f"{relative!r} would leave the archive directory")
        return final

    def _resolved_root(self) -> Path:
        """The root with its symlinks resolved, once: resolving walks every component
        with ``lstat``, twice per final path. Were the root moved away later, its paths
        would resolve elsewhere and be refused, never let out."""
        if self._root_real is None:
            self._root_real = self.root.resolve()
        return self._root_real

    def begin(self, export: Export) -> PartFile:
        """Create the private temporary file the download is streamed into.

        A part an earlier attempt at the same export left (a daemon that died, whose
        export another daemon on a shared ledger took over) is removed first: only one
        attempt at an export runs at a time (its claim), so it is nobody's any more.
        The first attempt (``attempts`` 1: each attempt is counted by its claim before
        its part is made) has no earlier one and skips the search, which lists the
        directory holding the month's payloads: once per export, a backlog cost O(n²).
        A part left by an attempt whose count was taken back (parked by an outage
        before its part could be removed) is removed at the next start
        (``remove_leftovers``).
        """
        final = self._final(self.relative_path(export))
        try:
            self.access.make_dirs(final.parent)
        except OSError as exc:
            raise ArchiveError(f"cannot create {final.parent}: {exc.strerror}") from exc
        if export.attempts != 1:
            for earlier in final.parent.glob(f".{export.job_id}.*{PART_SUFFIX}"):
                logger.info("archive: removing %s left by an interrupted download", earlier.name)
                earlier.unlink(missing_ok=True)
        name = f".{export.job_id}.{secrets.token_hex(6)}{PART_SUFFIX}"
        return PartFile(final.parent / name, self.access)

    def describe(self, export: Export, result: DownloadResult) -> ArchivedFile:
        return describe(export, result)

    def publish(self, part_path: Path | str, archived: ArchivedFile) -> None:
        """Rename the sealed part file over its final name and make the rename durable."""
        final = self._final(archived.path)
        try:
            os.replace(part_path, final)
            crashpoints.crash_point("archive:after-rename")
            _fsync_dir(final.parent)
        except OSError as exc:
            raise ArchiveError(f"cannot move the payload into {final}: {exc.strerror}") from exc

    def drop_part(self, part: str) -> None:
        """Delete the part file at *part* if it is still there (a rename moves it, so it
        normally is not); never raises."""
        with contextlib.suppress(OSError):
            Path(part).unlink(missing_ok=True)

    def verify(self, archived: ArchivedFile, candidate: Path | str | None = None) -> bool:
        """Return whether *candidate* (default: the final file) holds exactly *archived*."""
        path = Path(candidate) if candidate else self._final(archived.path)
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

    def append_manifest(
        self,
        export: Export,
        archived: ArchivedFile,
        now: datetime,
        record: Callable[[int], None],
    ) -> None:
        """Append *export*'s line to the manifest once, even across crashes; fsync.

        The manifest is never read whole. *record* is called with the offset the line
        will start at, before it is written, and must make it durable (the ledger
        commits it as ``Export.manifest_offset``). On a later call for the same export,
        the line is looked for at that offset only: found, nothing is written; a tail
        cut short there (a crash in the write) is cut off and the line written again.
        """
        line = manifest_line(export, archived, now)
        manifest = self.root / MANIFEST_NAME
        text = manifest_json(line) + "\n"
        with self._manifest_lock:
            try:
                fd = os.open(
                    manifest,
                    os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            except OSError as exc:
                raise ArchiveError(f"cannot open {manifest}: {exc.strerror}") from exc
            try:
                if os.fstat(fd).st_size == 0:
                    self.access.apply(fd, self.access.file_mode)
                if self._already_there(fd, export.manifest_offset, line, manifest):
                    return
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    end = self._cut_torn_tail(fd, end)
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    text = "\n" + text  # a torn line we may not cut: never glue ours onto it
                    end += 1
                record(end)
                crashpoints.crash_point("archive:before-manifest-line")
                self._write(fd, text.encode("utf-8"))
                os.fsync(fd)
            except OSError as exc:
                raise ArchiveError(f"cannot append to {manifest}: {exc.strerror}") from exc
            finally:
                os.close(fd)

    @staticmethod
    def _cut_torn_tail(fd: int, end: int) -> int:
        """Cut off a line a crash left unfinished at the end; return the new end.

        Every line is written with its newline, so a tail without one is a write cut short.
        Its export has the line's offset in the ledger and writes it again when it is
        resumed; cutting it now keeps the manifest all whole lines even when another
        export's line comes first (downloads resume in parallel). A tail longer than any
        line we write is not ours and is left alone.
        """
        start = max(0, end - MAX_LINE_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline < 0 and start > 0:
            return end
        cut = start + newline + 1
        os.ftruncate(fd, cut)
        return cut

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        if crashpoints.armed("archive:mid-manifest-line"):
            os.write(fd, data[: len(data) // 2])
            crashpoints.crash_point("archive:mid-manifest-line")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _already_there(
        self, fd: int, recorded: int | None, line: ManifestLine, manifest: Path
    ) -> bool:
        """Whether the line was written before a crash; cut off a torn write of it."""
        if recorded is None:
            return False  # never attempted
        if recorded == MANIFEST_OFFSET_UNKNOWN:  # verified by an older version
            return self._manifest_has(manifest, line.job_id, line.sha256)
        end = os.fstat(fd).st_size
        if recorded >= end:
            return False
        tail = os.pread(fd, min(end - recorded, MAX_LINE_BYTES), recorded)
        found, newline, _ = tail.partition(b"\n")
        if not newline:
            if end - recorded <= MAX_LINE_BYTES:
                os.ftruncate(fd, recorded)  # our write, cut short: nothing was after it
            return False
        try:
            entry = json.loads(found)
        except ValueError:
            return False
        return (
            isinstance(entry, dict)
            and entry.get("job_id") == line.job_id
            and entry.get("sha256") == line.sha256
        )

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

    def remove_leftovers(self, keep: set[str]) -> list[str]:
        """Delete the part files of downloads a previous process did not finish, except
        those at the paths in *keep*; return the paths deleted."""
        removed = []
        for stale in self.stale_parts({Path(path).resolve() for path in keep}):
            stale.unlink(missing_ok=True)
            removed.append(str(stale))
        return removed

    def leftover_jobs(self) -> list[str]:
        """None: :meth:`remove_leftovers` sweeps the directory's part files (one process
        per directory)."""
        return []

    def clear_leftovers(self, job_id: str, before: datetime) -> list[str]:
        del job_id, before
        return []

    def stale_parts(self, keep: set[Path]) -> list[Path]:
        """Return part files left by an interrupted run, except those in *keep*."""
        if not self.root.is_dir():
            return []
        return [
            path
            for path in self.root.rglob(f".*{PART_SUFFIX}")
            if path.is_file() and path.resolve() not in keep
        ]


def describe(export: Export, result: DownloadResult) -> ArchivedFile:
    """What the archive records of *export*'s downloaded payload (either archive: the
    same relative path, the same fields)."""
    return ArchivedFile(
        path=relative_path(export, result.format),
        format=result.format,
        bytes=result.bytes,
        sha256=result.sha256,
        records=result.records,
        top_level=result.top_level,
        source=result.final_url,
    )


def relative_path(export: Export, fmt: str = "json") -> str:
    """Return the final path of *export*'s payload as *fmt*, relative to the archive's top
    (a directory, or an S3 prefix): ``<method>/<YYYY>/<MM>/<target>_job-<job_id>.<fmt>``."""
    request = export.request
    job_id = export.job_id or ""
    if not JOB_ID_RE.match(job_id):
        raise ArchiveError(f"export {export.export_id}: job ID {job_id!r} is not archivable")
    try:
        named = target(request)
    except ValueError:
        named = ""
    if (request.method == CONTACT_DATA_METHOD and not STAT_ID_RE.match(request.stat)) or not (
        _METHOD_RE.match(request.method) and _TARGET_RE.match(named)
    ):
        raise ArchiveError(f"export {export.export_id}: stat or method is not archivable")
    if fmt not in FORMATS:
        raise ArchiveError(f"export {export.export_id}: format {fmt!r} is not archivable")
    when = export.submitted_at or export.created_at
    return f"{request.method}/{when:%Y}/{when:%m}/{named}_job-{job_id}.{fmt}"


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
        format=archived.format,
        options=json.loads(request.options or "{}"),
        requested_format=request.format,
    )
