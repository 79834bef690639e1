"""The archive: paths from validated IDs only, private atomic files, an idempotent manifest."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller.archive import Archive, PartFile
from inbox_poller.errors import ArchiveError
from inbox_poller.models import (
    MANIFEST_OFFSET_UNKNOWN,
    ArchivedFile,
    Export,
    ExportRequest,
    ExportState,
)

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


def test_a_part_an_earlier_attempt_left_is_removed_and_a_first_attempt_lists_nothing(
    tmp_path: Path,
) -> None:
    archive = Archive(tmp_path / "archive")
    first = dataclasses.replace(_export("314159"), attempts=1)
    part = archive.begin(first)
    month = part.path.parent
    part.discard()
    left = month / ".314159.0badc0ffee00.part"  # as a daemon that died would leave it
    left.write_bytes(b"half")
    other = month / ".2718.0badc0ffee00.part"  # another export's, under way
    other.write_bytes(b"x")
    # the first attempt: no attempt before it could have left a part; no listing
    archive.begin(first).discard()
    assert left.exists()
    for attempts in (2, 0):  # a later attempt, or one the ledger did not count
        archive.begin(dataclasses.replace(first, attempts=attempts)).discard()
        assert not left.exists()
        left.write_bytes(b"half")
    assert other.exists()


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
    with pytest.raises(ArchiveError, match="would leave the archive directory"):
        Archive(root).begin(_export("123"))
    assert list(outside.iterdir()) == []


def test_a_symlink_planted_after_the_first_export_cannot_lead_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "archive"
    archive = Archive(root)
    archive.begin(_export("123")).discard()  # the root is resolved once, here
    method_dir = root / "GetNewsletterContactDataSummaryAsync"
    for path in sorted(method_dir.rglob("*"), reverse=True):
        path.rmdir()
    method_dir.rmdir()
    method_dir.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArchiveError, match="would leave the archive directory"):
        archive.begin(_export("456"))
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


def _archived(archive: Archive, export: Export, body: bytes = b"[1]") -> ArchivedFile:
    return ArchivedFile(archive.relative_path(export), len(body), "ab" * 32, 1, "array", "h")


def _manifest_lines(root: Path) -> list[bytes]:
    return (root / "manifest.jsonl").read_bytes().splitlines(keepends=True)


def test_every_directory_it_creates_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        archive = Archive(tmp_path / "missing" / "archive")
        archive.ensure_writable()
        archive.begin(_export("1")).discard()
    finally:
        os.umask(old)
    created = [
        tmp_path / "missing",
        archive.root,
        *(archive.root / "GetNewsletterContactDataSummaryAsync" / "2026" / "11" / "x").parents,
    ]
    for directory in {d for d in created if d.is_relative_to(tmp_path / "missing")}:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def _readers_group() -> tuple[str, int]:
    """A group this process may give files to: another one as root, else its own."""
    import grp

    if os.geteuid() == 0:
        for name in ("daemon", "nogroup", "adm"):
            with contextlib.suppress(KeyError):
                return name, grp.getgrnam(name).gr_gid
    gid = os.getegid()
    return grp.getgrgid(gid).gr_name, gid


def test_a_readers_group_gets_0640_files_and_0750_directories(tmp_path: Path) -> None:
    name, gid = _readers_group()
    old = os.umask(0o077)  # the unit's UMask=: the modes are set, not left to the umask
    try:
        archive = Archive(tmp_path / "archive", group=name)
        archive.ensure_writable()
        export = _export("777")
        part = archive.begin(export)
        part.write(b"[1]")
        part.seal()
        archived = _archived(archive, export)
        archive.publish(part.path, archived)
        archive.append_manifest(export, archived, NOW, lambda offset: None)
    finally:
        os.umask(old)
    final = archive.final_path(archived)
    for path in (final, archive.root / "manifest.jsonl"):
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, gid), path
    for directory in [archive.root, *final.parent.relative_to(archive.root).parents]:
        info = (archive.root / directory).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o750, gid), directory
    month = final.parent
    assert (stat.S_IMODE(month.stat().st_mode), month.stat().st_gid) == (0o750, gid)


def test_setting_a_group_later_opens_the_archive_top_to_it(tmp_path: Path) -> None:
    name, gid = _readers_group()
    Archive(tmp_path / "archive").ensure_writable()
    (tmp_path / "archive" / "manifest.jsonl").write_bytes(b"")
    os.chmod(tmp_path / "archive" / "manifest.jsonl", 0o600)
    Archive(tmp_path / "archive", group=name).ensure_writable()
    root = (tmp_path / "archive").stat()
    manifest = (tmp_path / "archive" / "manifest.jsonl").stat()
    assert (stat.S_IMODE(root.st_mode), root.st_gid) == (0o750, gid)
    assert (stat.S_IMODE(manifest.st_mode), manifest.st_gid) == (0o640, gid)


def test_an_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="there is no group 'no-such-group-x'"):
        Archive(tmp_path, group="no-such-group-x")


def test_the_offset_is_recorded_before_the_line_is_written(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    first, second = _export("1"), _export("2")
    seen: list[tuple[int, int]] = []

    def record(offset: int) -> None:
        manifest = tmp_path / "manifest.jsonl"
        seen.append((offset, manifest.stat().st_size if manifest.exists() else 0))

    archive.append_manifest(first, _archived(archive, first), NOW, record)
    archive.append_manifest(second, _archived(archive, second), NOW, record)
    lines = _manifest_lines(tmp_path)
    assert seen == [(0, 0), (len(lines[0]), len(lines[0]))]  # the line starts there, unwritten


def test_a_resumed_append_never_reads_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the whole-manifest scan (O(n) per export) is left only for exports verified by an
    # older version (MANIFEST_OFFSET_UNKNOWN)
    def no_scan(*args: object) -> bool:
        raise AssertionError("read the whole manifest")

    monkeypatch.setattr(Archive, "_manifest_has", staticmethod(no_scan))
    archive = Archive(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"job_id": "0"}\n' * 1000)
    export = _export("5")
    offsets: list[int] = []
    archive.append_manifest(export, _archived(archive, export), NOW, offsets.append)
    resumed = dataclasses.replace(export, manifest_offset=offsets[0])
    archive.append_manifest(resumed, _archived(archive, export), NOW, offsets.append)
    assert len(_manifest_lines(tmp_path)) == 1001


def test_its_own_torn_write_is_cut_off_and_written_again(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    other, mine = _export("1"), _export("2")
    archive.append_manifest(other, _archived(archive, other), NOW, lambda offset: None)
    offsets: list[int] = []
    archive.append_manifest(mine, _archived(archive, mine), NOW, offsets.append)
    manifest = tmp_path / "manifest.jsonl"
    whole = manifest.read_bytes()
    manifest.write_bytes(whole[: offsets[0] + 40])  # the crash cut the write short
    resumed = dataclasses.replace(mine, manifest_offset=offsets[0])
    archive.append_manifest(resumed, _archived(archive, mine), NOW, offsets.append)
    entries = [json.loads(line) for line in _manifest_lines(tmp_path)]
    assert [e["job_id"] for e in entries] == ["1", "2"]
    assert offsets == [offsets[0], offsets[0]]


def test_a_torn_line_is_cut_when_another_export_appends_first(tmp_path: Path) -> None:
    # downloads resume in parallel: another export may append before the torn one is redone
    archive = Archive(tmp_path)
    first, torn, other = _export("1"), _export("2"), _export("3")
    archive.append_manifest(first, _archived(archive, first), NOW, lambda offset: None)
    offsets: list[int] = []
    archive.append_manifest(torn, _archived(archive, torn), NOW, offsets.append)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_bytes(manifest.read_bytes()[: offsets[0] + 40])  # the crash cut it short
    archive.append_manifest(other, _archived(archive, other), NOW, lambda offset: None)
    resumed = dataclasses.replace(torn, manifest_offset=offsets[0])
    archive.append_manifest(resumed, _archived(archive, torn), NOW, lambda offset: None)
    entries = [json.loads(line) for line in _manifest_lines(tmp_path)]  # every line whole
    assert [e["job_id"] for e in entries] == ["1", "3", "2"]


def test_a_line_never_written_is_written_after_later_ones(tmp_path: Path) -> None:
    # recorded, then the process died before writing; another export appended meanwhile
    archive = Archive(tmp_path)
    mine, other = _export("2"), _export("3")
    archive.append_manifest(other, _archived(archive, other), NOW, lambda offset: None)
    resumed = dataclasses.replace(mine, manifest_offset=0)
    archive.append_manifest(resumed, _archived(archive, mine), NOW, lambda offset: None)
    entries = [json.loads(line) for line in _manifest_lines(tmp_path)]
    assert [e["job_id"] for e in entries] == ["3", "2"]


def test_an_export_verified_before_offsets_existed_is_looked_for_once(tmp_path: Path) -> None:
    archive = Archive(tmp_path)
    export = _export("9")
    archive.append_manifest(export, _archived(archive, export), NOW, lambda offset: None)
    legacy = dataclasses.replace(export, manifest_offset=MANIFEST_OFFSET_UNKNOWN)
    archive.append_manifest(legacy, _archived(archive, export), NOW, lambda offset: None)
    assert len(_manifest_lines(tmp_path)) == 1


def test_write_behind_flushes_on_its_own_thread_while_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inbox_poller import archive

    monkeypatch.setattr(archive, "WRITE_BEHIND_BYTES", 1024)
    flushed_on: list[str] = []
    flushed = threading.Event()
    real_fdatasync = os.fdatasync

    def fdatasync(fd: int) -> None:
        flushed_on.append(threading.current_thread().name)
        real_fdatasync(fd)
        flushed.set()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    part = PartFile(tmp_path / ".x.part")
    for _ in range(8):
        part.write(memoryview(b"x" * 512))
    assert flushed.wait(10)  # a flush asked for at the last mark may not have run yet
    part.seal()
    assert flushed_on and set(flushed_on) == {"part-flush"}
    assert (tmp_path / ".x.part").read_bytes() == b"x" * 4096


def test_a_failed_write_behind_flush_is_raised_by_the_seal_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inbox_poller import archive

    monkeypatch.setattr(archive, "WRITE_BEHIND_BYTES", 1024)
    failed = threading.Event()

    def fdatasync(fd: int) -> None:
        failed.set()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    part = PartFile(tmp_path / ".x.part")
    part.write(b"x" * 2048)
    assert failed.wait(10)
    with pytest.raises(ArchiveError, match=r"cannot flush .*Input/output error"):
        part.seal()
