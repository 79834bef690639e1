"""Read the archive: the manifest, each payload's records, and a check of the whole.

The public API for the people who read what inbox-poller archives (README, "Read the
archive")::

    from inbox_poller.archive_reader import ArchiveReader

    archive = ArchiveReader("/var/lib/inbox-poller/archive")
    for entry in archive.manifest():        # one ManifestLine per archived payload
        for record in archive.records(entry):
            ...                             # a dict, as the payload holds it

* :meth:`ArchiveReader.manifest` reads ``manifest.jsonl`` line by line. Every field keeps
  the type it has in the file: job IDs, stat IDs and dates are strings
  (``"0987654"`` stays ``"0987654"``).
* :meth:`ArchiveReader.records` streams one payload's records: the items of its *main
  array*, chosen by the rule that counts the manifest's ``records``
  (``inbox_poller.mainarray``: the top-level array, or the first array near the top such
  as ``data.item``). Memory stays bounded by the largest record, whatever the file's size.
  Values are as ``json.loads`` gives them: strings stay strings, integers are ``int``,
  other numbers ``float``. A payload without a main array (``records`` is ``null`` in the
  manifest) has no records.
* :func:`verify` checks the whole archive against its manifest, streaming (``inbox-poller
  archive verify``).
* On an S3 archive (``[archive] url``), :class:`BucketReader` reads the same way from one
  manifest object per export, and :func:`verify_bucket` checks it; both read the bucket
  through :class:`BucketObjects` (``inbox_poller.archive.s3.S3Objects`` over boto3).

This module only reads. It is the layout's public contract: ``archive.py``, which writes
the archive, takes the manifest's name and line format from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, Protocol

import ijson

from inbox_poller.errors import ArchiveReadError
from inbox_poller.mainarray import HEAD_BYTES, main_array
from inbox_poller.payloadformats import FormatError, csv_records, xml_records, xml_shape

MANIFEST_NAME = "manifest.jsonl"
PART_SUFFIX = ".part"
"""A payload being written (``.<job_id>.<random>.part``); an interrupted download leaves one."""
MANIFEST_DIR = "manifest"
"""On a bucket (``[archive] url``), the manifest is one object per export under this
directory: :func:`manifest_object_path`."""
PARTS_DIR = ".parts"
"""On a bucket, uploads under way are under ``.parts/<job_id>/``."""
MAX_LINE_BYTES = 1 << 20
"""A manifest line longer than this is not one of ours (ours are well under 2 KiB)."""
READ_BYTES = 1 << 16
"""Bytes handed to the parser at a time."""

_BACKEND = ijson.get_backend("yajl2_c")  # as the download room: C, no ffi callbacks
_DIGIT_MAP = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x78 for byte in range(256))
"""``bytes.translate`` table: each ASCII digit becomes ``0``, any other byte ``x``."""


@dataclass(frozen=True)
class ManifestLine:
    """One line of ``manifest.jsonl``; the field names are a public contract."""

    job_id: str
    stat: str
    method: str
    startdate: str | None
    enddate: str | None
    path: str
    """The payload's path, relative to the archive directory."""
    bytes: int
    sha256: str
    records: int | None
    """Items of the payload's main array; ``None`` when it has none."""
    top_level: str
    """``array``, ``object``, or the JSON type of a scalar payload."""
    message_id: str | None
    submitted_at: str | None
    archived_at: str
    export_id: int
    source: str
    """The download link, as ``scheme://host/path`` (never its signed query)."""
    format: str = "json"
    """What the payload is: ``json``, ``csv`` or ``xml`` (lines written before formats
    existed are JSON)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The method's options as requested (``{"list": ["3"], "status": "active"}``);
    ``stat`` is its own field."""
    requested_format: str = "json"
    """The format that was asked for; ``format`` differs when Pinpointe sent JSON anyway."""


_OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "options": (dict,),
    "requested_format": (str,),
}
"""Fields added later: a line without them reads with the defaults."""

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "job_id": (str,),
    "stat": (str,),
    "method": (str,),
    "startdate": (str, type(None)),
    "enddate": (str, type(None)),
    "path": (str,),
    "bytes": (int,),
    "sha256": (str,),
    "records": (int, type(None)),
    "top_level": (str,),
    "message_id": (str, type(None)),
    "submitted_at": (str, type(None)),
    "archived_at": (str,),
    "export_id": (int,),
    "source": (str,),
}
assert set(_FIELD_TYPES) | set(_OPTIONAL_FIELDS) == {f.name for f in fields(ManifestLine)}


def parse_manifest_line(text: bytes | str) -> ManifestLine:
    """Return the :class:`ManifestLine` one line holds; fields it does not know are ignored.

    :raises ValueError: not a JSON object, or a field missing or of the wrong type.
    """
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    for name, types in _FIELD_TYPES.items():
        if name not in value:
            raise ValueError(f"no {name!r}")
        item = value[name]
        if not isinstance(item, types) or (isinstance(item, bool) and bool not in types):
            raise ValueError(f"{name!r} is {type(item).__name__}")
    optional = {}
    for name, types in _OPTIONAL_FIELDS.items():
        if name in value:
            if not isinstance(value[name], types):
                raise ValueError(f"{name!r} is {type(value[name]).__name__}")
            optional[name] = value[name]
    return ManifestLine(**{name: value[name] for name in _FIELD_TYPES}, **optional)


def manifest_object_path(relative: str) -> str:
    """Return where, relative to a bucket archive's prefix, the manifest object of the
    payload at *relative* is: ``manifest/`` + its path with ``.json`` for its extension
    (``manifest/<method>/<YYYY>/<MM>/<target>_job-<job_id>.json``)."""
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    return f"{MANIFEST_DIR}/{stem}.json"


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(number, line)`` for each line, ``None`` for one over ``MAX_LINE_BYTES``."""
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the overlong line, in bounded pieces
            yield number, None
            continue
        yield number, raw


class ArchiveReader:
    """An archive directory, read only: its manifest and its payloads' records."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def manifest(self) -> Iterator[ManifestLine]:
        """Yield each manifest line, oldest first, reading the file line by line.

        A line that is not complete JSON is skipped: only a crash can leave one (a write
        cut short), and the complete line was written after it. :func:`verify` reports it.

        :raises ArchiveReadError: the manifest cannot be read, or a complete line is not
            a manifest line.
        """
        try:
            handle = self.manifest_path.open("rb")
        except FileNotFoundError:
            return  # nothing archived yet
        except OSError as exc:
            raise ArchiveReadError(f"cannot read {self.manifest_path}: {exc.strerror}") from exc
        with handle:
            for number, raw in _lines(handle):
                if raw is None:
                    raise ArchiveReadError(f"{self.manifest_path}:{number}: line too long")
                try:
                    yield parse_manifest_line(raw)
                except json.JSONDecodeError:
                    continue  # a torn line
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ArchiveReadError(f"{self.manifest_path}:{number}: {exc}") from None

    def path(self, entry: ManifestLine | str) -> Path:
        """Return the payload file of *entry* (a manifest line or its ``path``).

        :raises ArchiveReadError: the path would leave the archive directory.
        """
        relative = entry.path if isinstance(entry, ManifestLine) else entry
        parts = Path(relative).parts
        if not parts or Path(relative).is_absolute() or ".." in parts:
            raise ArchiveReadError(f"{relative!r} is not a path inside the archive")
        return self.root / relative

    def records(self, entry: ManifestLine | str) -> Iterator[Any]:
        """Yield the records of *entry*'s payload (a manifest line or its ``path``), streaming.

        JSON: the main array's items; CSV: each row as a dict keyed by the header; XML:
        each record element as a dict of its attributes and its children's text.
        """
        fmt = entry.format if isinstance(entry, ManifestLine) else None
        return read_records(self.path(entry), fmt)


class BucketObjects(Protocol):
    """A bucket, read only, as the readers of an S3 archive need it
    (``inbox_poller.archive.s3.S3Objects`` is the one over boto3)."""

    @property
    def url(self) -> str:
        """``s3://bucket``."""
        ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` of each object whose key starts with *prefix*, in key order."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Return the object's body as a stream (the caller closes it); reading it raises
        ``OSError`` when the request fails, ``FileNotFoundError`` when there is no such key."""
        ...

    def uploads(self, prefix: str) -> Iterator[str]:
        """Yield the key of each incomplete multipart upload under *prefix*."""
        ...


class BucketReader:
    """An S3 archive (``[archive] url``), read only: its manifest objects and payloads.

    The same reading as :class:`ArchiveReader`, from the objects under *prefix*::

        import boto3
        from inbox_poller.archive.s3 import S3Objects

        objects = S3Objects(boto3.client("s3", endpoint_url=...), "bucket")
        archive = BucketReader(objects, "prefix")
        for entry in archive.manifest():
            for record in archive.records(entry):
                ...
    """

    def __init__(self, objects: BucketObjects, prefix: str = "") -> None:
        self.objects = objects
        self.prefix = prefix.strip("/")

    def key(self, relative: str) -> str:
        """The key of *relative* (a path under the prefix)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    @property
    def url(self) -> str:
        return f"{self.objects.url}/{self.prefix}".rstrip("/")

    def manifest(self) -> Iterator[ManifestLine]:
        """Yield each manifest object's line, in key order (method, year, month, target).

        :raises ArchiveReadError: an object cannot be read or is not a manifest line.
        """
        for key, _size in self.objects.list(self.key(f"{MANIFEST_DIR}/")):
            if not key.endswith(".json"):
                continue
            raw = _read_small(self.objects, key)
            try:
                yield parse_manifest_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ArchiveReadError(f"{self.objects.url}/{key}: {exc}") from None

    def payload_key(self, entry: ManifestLine | str) -> str:
        """Return the key of *entry*'s payload (a manifest line or its ``path``).

        :raises ArchiveReadError: the path would leave the prefix.
        """
        relative = entry.path if isinstance(entry, ManifestLine) else entry
        parts = PurePosixPath(relative).parts
        if not parts or relative.startswith("/") or ".." in parts:
            raise ArchiveReadError(f"{relative!r} is not a path inside the archive")
        return self.key(relative)

    def records(self, entry: ManifestLine | str) -> Iterator[Any]:
        """Yield the records of *entry*'s payload, streaming (as :meth:`ArchiveReader.records`)."""
        key = self.payload_key(entry)
        fmt = entry.format if isinstance(entry, ManifestLine) else None
        return stream_records(lambda: self.objects.open(key), f"{self.objects.url}/{key}", fmt)


def _read_small(objects: BucketObjects, key: str) -> bytes:
    """Read a manifest object, refusing one larger than :data:`MAX_LINE_BYTES`."""
    try:
        with objects.open(key) as body:
            raw = body.read(MAX_LINE_BYTES + 1)
    except OSError as exc:
        raise ArchiveReadError(f"cannot read {objects.url}/{key}: {exc}") from exc
    if len(raw) > MAX_LINE_BYTES:
        raise ArchiveReadError(f"{objects.url}/{key}: longer than {MAX_LINE_BYTES} bytes")
    return raw


def read_records(path: str | os.PathLike[str], fmt: str | None = None) -> Iterator[Any]:
    """Yield the records of the payload at *path*, streaming; *fmt* defaults to its
    extension (``.csv``, ``.xml``, else JSON).

    :raises ArchiveReadError: while iterating: the file cannot be read or is not valid.
    """
    return stream_records(lambda: Path(path).open("rb"), str(path), fmt)


def stream_records(
    open_payload: Callable[[], BinaryIO], name: str, fmt: str | None = None
) -> Iterator[Any]:
    """Yield the records of the payload *open_payload* opens (a file, an object's body),
    streaming; it may be called more than once (each call reads from the start), and each
    stream it returns is closed. *name* names the payload in errors; *fmt* defaults to its
    extension."""
    fmt = fmt or {".csv": "csv", ".xml": "xml"}.get(PurePosixPath(name).suffix, "json")
    if fmt == "json":
        return _json_records(open_payload, name)
    return _table_records(open_payload, name, fmt)


def _table_records(
    open_payload: Callable[[], BinaryIO], name: str, fmt: str
) -> Iterator[dict[str, str]]:
    try:
        if fmt == "csv":
            with open_payload() as handle:
                yield from csv_records(handle)
            return
        with open_payload() as handle:
            record_path = xml_shape(handle).record_path
        if record_path is None:
            return
        with open_payload() as handle:
            yield from xml_records(handle, record_path)
    except OSError as exc:
        raise ArchiveReadError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except FormatError as exc:
        raise ArchiveReadError(f"{name}: {exc}") from None


def _json_records(open_payload: Callable[[], BinaryIO], name: str) -> Iterator[Any]:
    """Yield the items of the main array of the JSON payload, streaming.

    :raises ArchiveReadError: while iterating: the payload cannot be read, is not valid
        JSON, or holds a number Python cannot convert (at the record where it happens).
    """
    try:
        with open_payload() as handle:
            source = _DigitGuard(handle, name)
            _, prefix = main_array(_events(source.read_head(HEAD_BYTES)))
        if prefix is None:
            return
        with open_payload() as handle:
            source = _DigitGuard(handle, name)
            for item in _BACKEND.items(source, prefix, buf_size=READ_BYTES):
                yield _plain(item)
    except OSError as exc:
        raise ArchiveReadError(f"cannot read {name}: {exc.strerror or exc}") from exc
    except ArithmeticError:
        raise ArchiveReadError(f"{name}: a number whose exponent is out of range") from None
    except (ijson.JSONError, ValueError) as exc:
        # "from None": yajl's message quotes the payload next to the error
        raise ArchiveReadError(f"{name}: not valid JSON ({_first_line(exc)})") from None


def _events(head: bytes) -> Iterator[tuple[str, str]]:
    """Yield the head's ``(prefix, event)`` pairs, ending quietly where ijson stops."""
    with contextlib.suppress(ijson.JSONError, ValueError, ArithmeticError):
        for prefix, event, _ in _BACKEND.parse(_Bytes(head)):
            yield prefix, event


class _Bytes:
    """*data* as a file for ijson (``io.BytesIO`` without its copy)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        piece = self._data[self._pos : end]
        self._pos += len(piece)
        return piece


class _DigitGuard:
    """The file as ijson reads it, refusing an integer Python would refuse to convert.

    yajl2_c (ijson 3.6) dies with SIGSEGV on an integer longer than Python's limit on
    integer digits (``sys.get_int_max_str_digits()``, 4300), where ``json.loads`` raises
    ValueError. A valid payload may hold one, so every run of digits is measured on the
    way in (across reads), and a longer one raises :class:`ArchiveReadError` instead.
    """

    def __init__(self, handle: IO[bytes], name: str) -> None:
        self._handle = handle
        self._name = name
        self._limit = sys.get_int_max_str_digits()
        self._long_run = b"0" * (self._limit + 1)
        self.restart()

    def restart(self) -> None:
        self._carry = 0  # digits ending what was read so far
        self._offset = 0

    def read_head(self, size: int) -> bytes:
        head = b""
        while len(head) < size and (piece := self.read(size - len(head))):
            head += piece
        return head

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size if size >= 0 else READ_BYTES)
        if self._limit and data:
            self._check(data)
        self._offset += len(data)
        return data

    def _check(self, data: bytes) -> None:
        mapped = data.translate(_DIGIT_MAP)
        first_other = mapped.find(b"x")
        leading = len(data) if first_other < 0 else first_other
        run_at = self._offset - self._carry if self._carry + leading > self._limit else -1
        if run_at < 0 and first_other >= 0:
            found = mapped.find(self._long_run, first_other)
            run_at = self._offset + found if found >= 0 else -1
        if run_at >= 0:
            raise ArchiveReadError(
                f"{self._name}: a run of more than {self._limit} digits at byte {run_at}: "
                "Python refuses to convert so long an integer (sys.set_int_max_str_digits)"
            )
        self._carry = (
            self._carry + leading if first_other < 0 else len(data) - 1 - mapped.rfind(b"x")
        )


def _plain(value: Any) -> Any:
    """Turn ijson's ``Decimal`` numbers into ``float`` in place, as ``json.loads`` reads them."""
    if isinstance(value, dict):
        for key, item in value.items():
            if type(item) is Decimal:
                value[key] = float(item)
            elif isinstance(item, dict | list):
                _plain(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if type(item) is Decimal:
                value[index] = float(item)
            elif isinstance(item, dict | list):
                _plain(item)
    elif type(value) is Decimal:
        return float(value)
    return value


def _first_line(exc: Exception) -> str:
    """The first line of a parser error, without the payload excerpt yajl appends."""
    text = str(exc)
    if text[:2] in ("b'", 'b"'):
        text = text[2:]
    return text.replace("\\n", "\n").split("\n", 1)[0].strip().rstrip(".") or type(exc).__name__


# ---- verify ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the archive; ``where`` is ``manifest.jsonl:N`` or a file's path."""

    kind: str
    """``torn-line``, ``bad-line``, ``duplicate``, ``missing``, ``not-a-file``, ``size``,
    ``sha256``, ``unreadable``, ``partial``, ``stray`` or ``no-archive``; on a bucket also
    ``upload`` (an incomplete multipart upload)."""
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class Verification:
    """What :func:`verify` checked, and every problem it found."""

    root: Path | str
    """The directory, or the ``s3://bucket/prefix`` of an S3 archive."""
    lines: int = 0
    payloads: int = 0
    """Payload files whose size and SHA-256 were checked."""
    bytes: int = 0
    """Bytes hashed."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def directory(self) -> Path:
        """The archive directory (:func:`verify`; not for a bucket's report)."""
        assert isinstance(self.root, Path)
        return self.root


def verify(
    root: str | os.PathLike[str], on_problem: Callable[[Problem], None] | None = None
) -> Verification:
    """Check the archive at *root* against its manifest, like ``restic check``.

    Every manifest line must be a complete manifest line, name a job ID and a path no
    other line names, and its file must be a regular file with the recorded size and
    SHA-256; every file under *root* must be the manifest or named by a line (a part file
    is reported as ``partial``: a download in progress, or one a crash interrupted, which
    the daemon removes at its next start). Files are read in bounded pieces and the tree
    is walked as a stream; memory grows only with the number of manifest lines (their job
    IDs and paths). *on_problem* is called with each problem as it is found.
    """
    report = Verification(Path(root))

    def problem(kind: str, where: str, detail: str) -> None:
        found = Problem(kind, where, detail)
        report.problems.append(found)
        if on_problem is not None:
            on_problem(found)

    if not report.directory.is_dir():
        problem("no-archive", str(report.directory), "not a directory")
        return report
    paths = _verify_manifest(report, problem)
    _verify_tree(report, paths, problem)
    return report


def _verify_manifest(report: Verification, problem: Callable[[str, str, str], None]) -> set[str]:
    """Check each manifest line and its file; return the paths the manifest names."""
    manifest = report.directory / MANIFEST_NAME
    jobs: dict[str, int] = {}
    paths: dict[str, int] = {}
    try:
        handle = manifest.open("rb")
    except FileNotFoundError:
        return set()
    except OSError as exc:
        problem("unreadable", MANIFEST_NAME, exc.strerror or str(exc))
        return set()
    reader = ArchiveReader(report.directory)
    with handle:
        for number, raw in _lines(handle):
            report.lines += 1
            where = f"{MANIFEST_NAME}:{number}"
            if raw is None:
                problem("bad-line", where, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            try:
                line = parse_manifest_line(raw)
            except json.JSONDecodeError:
                problem("torn-line", where, "not complete JSON (a write cut short by a crash?)")
                continue
            except (ValueError, UnicodeDecodeError) as exc:
                problem("bad-line", where, str(exc))
                continue
            if not raw.endswith(b"\n"):
                problem("torn-line", where, "the last line has no newline (a write cut short?)")
            if line.job_id in jobs:
                problem(
                    "duplicate", where, f"job {line.job_id} is also on line {jobs[line.job_id]}"
                )
                continue
            jobs[line.job_id] = number
            if line.path in paths:
                problem("duplicate", where, f"{line.path} is also on line {paths[line.path]}")
                continue
            paths[line.path] = number
            _verify_payload(report, reader, line, where, problem)
    return set(paths)


def _verify_payload(
    report: Verification,
    reader: ArchiveReader,
    line: ManifestLine,
    where: str,
    problem: Callable[[str, str, str], None],
) -> None:
    try:
        path = reader.path(line)
    except ArchiveReadError as exc:
        problem("bad-line", where, str(exc))
        return
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or not _inside(report.directory, path):
            problem("not-a-file", line.path, f"not a regular file in the archive ({where})")
            return
        if info.st_size != line.bytes:
            problem("size", line.path, f"{info.st_size} bytes, the manifest says {line.bytes}")
            return
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        problem("missing", line.path, f"named by {where}")
        return
    except OSError as exc:
        problem("unreadable", line.path, exc.strerror or str(exc))
        return
    report.payloads += 1
    report.bytes += info.st_size
    if digest != line.sha256:
        problem("sha256", line.path, f"SHA-256 {digest}, the manifest says {line.sha256}")


def _inside(root: Path, path: Path) -> bool:
    """Whether *path*, symbolic links resolved, is inside *root*."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def _verify_tree(
    report: Verification, paths: set[str], problem: Callable[[str, str, str], None]
) -> None:
    """Walk *root* as a stream: every file must be the manifest or named by a line."""

    def walk_error(exc: OSError) -> None:
        where = os.path.relpath(exc.filename, report.directory) if exc.filename else "."
        problem("unreadable", where, exc.strerror or str(exc))

    for directory, dirnames, filenames, dir_fd in os.fwalk(report.directory, onerror=walk_error):
        relative_dir = os.path.relpath(directory, report.directory)
        for name in sorted(dirnames):
            if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
                problem("stray", _join(relative_dir, name), "a symbolic link")
        for name in sorted(filenames):
            relative = _join(relative_dir, name)
            if relative == MANIFEST_NAME:
                continue
            if name.startswith(".") and name.endswith(PART_SUFFIX):
                problem("partial", relative, "a download in progress, or interrupted")
            elif relative not in paths:
                problem("stray", relative, "not named by the manifest")
        dirnames.sort()


def _join(directory: str, name: str) -> str:
    return name if directory == "." else f"{directory}/{name}"


# ---- verify an S3 archive -------------------------------------------------------------------


def verify_bucket(
    objects: BucketObjects,
    prefix: str = "",
    on_problem: Callable[[Problem], None] | None = None,
) -> Verification:
    """Check the S3 archive under *prefix* against its manifest objects, like :func:`verify`.

    Every object under ``manifest/`` must be a manifest line, at the key its ``path``
    gives (:func:`manifest_object_path`), naming a job ID no other names; its payload must
    exist with the recorded size and SHA-256 (each read once, as a stream). Every other
    object must be a payload a manifest object names: one under ``.parts/`` is reported as
    ``partial`` (an upload under way, or left by a daemon that died: the next attempt at
    that export clears it), any other as ``stray``; each incomplete multipart upload is an
    ``upload``. The keys are listed once; memory grows with the number of objects. The
    ``where`` of each problem is the key relative to the prefix.
    """
    reader = BucketReader(objects, prefix)
    report = Verification(reader.url)

    def problem(kind: str, where: str, detail: str) -> None:
        found = Problem(kind, where, detail)
        report.problems.append(found)
        if on_problem is not None:
            on_problem(found)

    start = reader.key("")
    manifests: list[str] = []
    payloads: dict[str, int] = {}
    try:
        for key, size in objects.list(start):
            relative = key[len(start) :]
            if relative.startswith(f"{MANIFEST_DIR}/"):
                manifests.append(relative)
            elif relative.startswith(f"{PARTS_DIR}/"):
                problem("partial", relative, "an upload in progress, or interrupted")
            else:
                payloads[relative] = size
        for key in objects.uploads(start):
            problem("upload", key[len(start) :], "an incomplete multipart upload")
    except OSError as exc:
        problem("unreadable", ".", str(exc))
        return report
    named: set[str] = set()
    jobs: dict[str, str] = {}
    for where in manifests:
        report.lines += 1  # every object under manifest/, as every line of the file
        line = _bucket_manifest_line(reader, where, problem)
        if line is None:
            continue
        if line.job_id in jobs:
            problem("duplicate", where, f"job {line.job_id} is also in {jobs[line.job_id]}")
            continue
        jobs[line.job_id] = where
        named.add(line.path)
        _verify_object(report, reader, line, where, payloads, problem)
    for relative in payloads:
        if relative not in named:
            problem("stray", relative, "not named by a manifest object")
    return report


def _bucket_manifest_line(
    reader: BucketReader, where: str, problem: Callable[[str, str, str], None]
) -> ManifestLine | None:
    if not where.endswith(".json"):
        problem("stray", where, "not a manifest object (.json)")
        return None
    try:
        line = parse_manifest_line(_read_small(reader.objects, reader.key(where)))
        reader.payload_key(line)
    except ArchiveReadError as exc:
        problem("unreadable", where, str(exc))
        return None
    except (ValueError, UnicodeDecodeError) as exc:
        problem("bad-line", where, str(exc))
        return None
    if manifest_object_path(line.path) != where:
        problem("bad-line", where, f"names {line.path}, whose manifest object is elsewhere")
        return None
    return line


def _verify_object(
    report: Verification,
    reader: BucketReader,
    line: ManifestLine,
    where: str,
    payloads: dict[str, int],
    problem: Callable[[str, str, str], None],
) -> None:
    size = payloads.get(line.path)
    if size is None:
        problem("missing", line.path, f"named by {where}")
        return
    if size != line.bytes:
        problem("size", line.path, f"{size} bytes, the manifest says {line.bytes}")
        return
    try:
        with reader.objects.open(reader.key(line.path)) as body:
            digest = hashlib.sha256()
            while chunk := body.read(READ_BYTES * 16):
                digest.update(chunk)
    except FileNotFoundError:
        problem("missing", line.path, f"named by {where}")
        return
    except OSError as exc:
        problem("unreadable", line.path, str(exc))
        return
    report.payloads += 1
    report.bytes += size
    if digest.hexdigest() != line.sha256:
        problem(
            "sha256", line.path, f"SHA-256 {digest.hexdigest()}, the manifest says {line.sha256}"
        )
