"""The archive: paths from validated IDs only, private atomic files, an idempotent manifest."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller.archive import Archive, PartFile
from inbox_poller.errors import ArchiveError
from inbox_poller.models import ArchivedFile, Export, ExportRequest, ExportState

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _export(
    job_id: str, stat_id: str = "42", method: str = "GetNewsletterContactDataSummaryAsync"
) -> Export:
    return Export(
        1,
        ExportRequest(stat_id, "20261101", "20261102", method),
        ExportState.DOWNLOADING,
        NOW,
        NOW,
        job_id=job_id,
        submitted_at=NOW,
        message_id="<m@x>",
    )


@pytest.mark.parametrize(
    "job_id",
    [
        "../../etc/passwd",
        "/abs",
        "a/b",
        "..",
        ".hidden",
        "x\x00y",
        "é",
        "a b",
        "",
        "a" * 65,
        "C:\\x",
    ],
)
def test_hostile_job_ids_never_make_a_path(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(ArchiveError):
        Archive(tmp_path).relative_path(_export(job_id))


@pytest.mark.parametrize(("stat_id", "method"), [("../x", "M"), ("1", "../../x"), ("1", "a/b")])
def test_hostile_stat_or_method_never_make_a_path(
    tmp_path: Path, stat_id: str, method: str
) -> None:
    with pytest.raises(ArchiveError):
        Archive(tmp_path).relative_path(_export("123", stat_id, method))


def test_layout_and_private_atomic_publish(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    export = _export("987654")
    part = archive.begin(export)
    part.write(b'[{"a": 1}]')
    part.seal()
    assert stat.S_IMODE(part.path.stat().st_mode) == 0o600
    archived = ArchivedFile(archive.relative_path(export), 10, "0" * 64, 1, "array", "https://h/p")
    assert archived.path == "GetNewsletterContactDataSummaryAsync/2026/11/stat-42_job-987654.json"
    archive.publish(part.path, archived)
    final = archive.final_path(archived)
    assert final.read_bytes() == b'[{"a": 1}]'
    assert not part.path.exists()
    assert stat.S_IMODE(final.parent.stat().st_mode) == 0o700
    assert archive.stale_parts(set()) == []
    archive.append_manifest(export, archived, NOW, lambda offset: None)
    assert stat.S_IMODE(os.stat(archive.root / "manifest.jsonl").st_mode) == 0o600


def test_part_files_refuse_to_follow_or_reuse_a_name(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / ".1.abc.part"
    link.symlink_to(target)
    with pytest.raises(ArchiveError):
        PartFile(link)
    assert target.read_text() == "keep"


def test_a_symlinked_directory_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "archive"
    root.mkdir()
    (root / "GetNewsletterContactDataSummaryAsync").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArchiveError):
        Archive(root).begin(_export("123"))
    assert list(outside.iterdir()) == []


def test_manifest_is_appended_once_and_survives_a_torn_line(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    export = _export("555")
    archived = ArchivedFile(
        archive.relative_path(export), 3, "ab" * 32, None, "object", "https://h/p"
    )
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"job_id": "1", "sha256": "x"}\n{"job_id": "torn')
    offsets: list[int] = []
    archive.append_manifest(export, archived, NOW, offsets.append)
    # a resumed crash: the ledger holds the offset recorded before the write; not twice
    resumed = dataclasses.replace(export, manifest_offset=offsets[0])
    archive.append_manifest(resumed, archived, NOW, offsets.append)
    assert len(offsets) == 1
    lines = manifest.read_text().splitlines()
    entries = [json.loads(x) for x in lines if x.endswith("}")]
    mine = [e for e in entries if e.get("job_id") == "555"]
    assert len(mine) == 1
    assert set(mine[0]) >= {
        "job_id",
        "stat",
        "method",
        "startdate",
        "enddate",
        "path",
        "bytes",
        "sha256",
        "records",
        "message_id",
        "submitted_at",
        "archived_at",
    }
