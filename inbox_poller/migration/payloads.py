"""Copy a local archive's payloads and manifest lines into an S3 archive.

Every line of ``manifest.jsonl`` names one payload: it goes to the same relative key
under the S3 prefix, through the archive's own part, publish and verify steps (never
overwriting: a key that holds the same SHA-256 is left as it is, one that holds
another is reported), and its line becomes that payload's manifest object. The bytes
are hashed on the way and must match the line. Each payload is done or not, so a cut
run is run again, and a second run copies nothing. docs/migration.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from inbox_poller.archive_reader import ManifestLine, parse_manifest_line
from inbox_poller.errors import ArchiveError, ArchiveUnavailable
from inbox_poller.models import ArchivedFile, Export
from inbox_poller.ports import ArchiveStore

logger = logging.getLogger("inbox_poller.migration")

CHUNK_BYTES = 1024 * 1024


class TargetArchive(ArchiveStore, Protocol):
    """The S3 archive (``archive.s3.S3Archive``) as a migration uses it."""

    def put_manifest(self, path: str, line: str) -> bool: ...


@dataclass
class ArchiveCopy:
    """What the copy did (or, a dry run, would do)."""

    source: str
    target: str
    lines: int = 0
    copied: int = 0
    copied_bytes: int = 0
    already: int = 0
    """Payloads the target held already, with the manifest's SHA-256."""
    manifests_written: int = 0
    manifests_already: int = 0
    problems: list[str] = field(default_factory=list)
    """Each payload or line not copied, and why."""


def copy_archive(
    source: Path,
    target: TargetArchive,
    target_name: str,
    export_of: Callable[[str], Export | None],
    *,
    dry_run: bool = False,
) -> ArchiveCopy:
    """Copy every payload ``manifest.jsonl`` under *source* names into *target*.

    *export_of* finds the ledger's export of a job ID (the target's part needs it).

    :raises ArchiveUnavailable: the target failed for a moment: run again later.
    """
    report = ArchiveCopy(str(source), target_name)
    manifest = source / "manifest.jsonl"
    if not manifest.exists():
        return report
    with manifest.open("rb") as handle:
        raw_lines = handle.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        report.lines += 1
        try:
            line = parse_manifest_line(raw)
        except ValueError as exc:
            torn = number == len(raw_lines)
            report.problems.append(
                f"manifest line {number}: {'torn last line, ' if torn else ''}not read: {exc}"
            )
            continue
        try:
            _copy_one(source, target, line, raw.decode("utf-8"), export_of, report, dry_run)
        except ArchiveUnavailable:
            raise
        except ArchiveError as exc:
            report.problems.append(f"{line.path} (job {line.job_id}): {exc}")
    return report


def _copy_one(
    source: Path,
    target: TargetArchive,
    line: ManifestLine,
    text: str,
    export_of: Callable[[str], Export | None],
    report: ArchiveCopy,
    dry_run: bool,
) -> None:
    local = (source / line.path).resolve()
    if not local.is_relative_to(source.resolve()):
        raise ArchiveError("the manifest's path leaves the archive directory: not copied")
    archived = ArchivedFile(
        path=line.path,
        bytes=line.bytes,
        sha256=line.sha256,
        records=line.records,
        top_level=line.top_level,
        source=line.source,
        format=line.format,
    )
    if target.verify(archived):
        report.already += 1
    elif not local.is_file():
        raise ArchiveError(f"no file at {local}: not copied")
    elif dry_run:
        report.copied += 1
        report.copied_bytes += local.stat().st_size
    else:
        export = export_of(line.job_id)
        if export is None:
            raise ArchiveError("its job is not in the ledger: not copied")
        report.copied_bytes += _upload(local, target, export, archived)
        report.copied += 1
        logger.info("migrate: copied %s (%d bytes)", line.path, line.bytes)
    if dry_run:
        return
    if target.put_manifest(line.path, text):
        report.manifests_written += 1
    else:
        report.manifests_already += 1


def _upload(local: Path, target: TargetArchive, export: Export, archived: ArchivedFile) -> int:
    """Stream *local* into a part, check its size and SHA-256, then publish it."""
    part = target.begin(export)
    digest = hashlib.sha256()
    size = 0
    try:
        with local.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                part.write(chunk)
        if size != archived.bytes or digest.hexdigest() != archived.sha256:
            raise ArchiveError(
                f"the file has {size} bytes, sha256 {digest.hexdigest()}; the manifest says "
                f"{archived.bytes} bytes, sha256 {archived.sha256}: not copied"
            )
        part.seal()
        target.publish(part.location, archived)
    except BaseException:
        part.discard()
        raise
    return size
