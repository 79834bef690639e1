"""The public reader: manifest lines, each payload's records by the manifest's rule, verify."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inbox_poller import archive_reader
from inbox_poller.archive import Archive
from inbox_poller.archive_reader import (
    ArchiveReader,
    ManifestLine,
    Problem,
    read_records,
    verify,
)
from inbox_poller.download.validation import validate
from inbox_poller.errors import ArchiveReadError
from inbox_poller.models import ArchivedFile, Export, ExportRequest, ExportState
from tests.download.test_shape import SHAPES

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _export(job_id: str, stat_id: str = "42") -> Export:
    return Export(
        1,
        ExportRequest(stat_id, "20261101", "20261102"),
        ExportState.DOWNLOADING,
        NOW,
        NOW,
        job_id=job_id,
        submitted_at=NOW,
        message_id="<m@x>",
    )


def archive_of(root: Path, payloads: dict[str, bytes]) -> Archive:
    """Archive each job ID's payload with the real writer, as the loop does."""
    archive = Archive(root)
    for job_id, body in payloads.items():
        export = _export(job_id)
        part = archive.begin(export)
        part.write(body)
        part.seal()
        shape = validate(io.BytesIO(body).read)
        archived = ArchivedFile(
            archive.relative_path(export),
            len(body),
            hashlib.sha256(body).hexdigest(),
            shape.records,
            shape.top_level,
            "https://h/p",
        )
        archive.publish(part.path, archived)
        archive.append_manifest(export, archived, NOW, lambda offset: None)
    return archive


# ---- records -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "top_level", "records"), SHAPES)
def test_records_are_the_items_the_manifest_counts(
    tmp_path: Path, body: bytes, top_level: str, records: int | None
) -> None:
    archive_of(tmp_path, {"1": body})
    reader = ArchiveReader(tmp_path)
    [entry] = reader.manifest()
    assert (entry.top_level, entry.records) == (top_level, records)
    assert len(list(reader.records(entry))) == (records or 0)


def test_records_keep_strings_and_read_numbers_as_json_does(tmp_path: Path) -> None:
    doc = {
        "status": "SUCCESS",
        "data": {
            "item": [
                {"subscriberid": "0012", "eventtime": "1735689600", "n": 12345678901234567890},
                {"x": 1.5, "y": [2.5, {"z": -0.25}], "t": True, "u": None},
            ]
        },
    }
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    records = list(read_records(path))
    assert records == json.loads(path.read_text())["data"]["item"]
    assert [type(v) for v in records[1]["y"]] == [float, dict]
    assert type(records[1]["y"][1]["z"]) is float


def test_manifest_fields_keep_their_types(tmp_path: Path) -> None:
    archive_of(tmp_path, {"0987654": b"[1]"})
    [entry] = ArchiveReader(tmp_path).manifest()
    assert (entry.job_id, entry.stat, entry.startdate, entry.enddate) == (
        "0987654",
        "42",
        "20261101",
        "20261102",
    )
    assert entry.records == 1 and entry.bytes == 3


def test_a_torn_manifest_line_is_skipped_and_a_bad_one_named(tmp_path: Path) -> None:
    archive_of(tmp_path, {"1": b"[1]", "2": b"[2, 3]"})
    manifest = tmp_path / "manifest.jsonl"
    first, second = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(first + b'{"job_id": "9", "st\n' + second)
    assert [e.job_id for e in ArchiveReader(tmp_path).manifest()] == ["1", "2"]
    manifest.write_bytes(first + b'{"job_id": 3}\n' + second)
    with pytest.raises(ArchiveReadError, match=r"manifest.jsonl:2: no 'stat'|:2: 'job_id'"):
        list(ArchiveReader(tmp_path).manifest())


def test_an_empty_archive_has_no_lines(tmp_path: Path) -> None:
    assert list(ArchiveReader(tmp_path / "nothing").manifest()) == []


@pytest.mark.parametrize("path", ["../x.json", "/etc/passwd", "", "a/../../b"])
def test_paths_never_leave_the_archive(tmp_path: Path, path: str) -> None:
    with pytest.raises(ArchiveReadError, match="not a path inside the archive"):
        ArchiveReader(tmp_path).path(path)


def test_invalid_json_is_an_error_at_the_record(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(b'[{"a": 1}, {"a": 2}, {"a": ]')
    records = read_records(path)
    assert next(records) == {"a": 1}
    with pytest.raises(ArchiveReadError, match="not valid JSON"):
        list(records)


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveReadError, match="cannot read"):
        list(read_records(tmp_path / "gone.json"))


@pytest.mark.parametrize("pad", [0, archive_reader.READ_BYTES - 2000, 3 * 65536 - 10])
def test_an_integer_python_refuses_is_an_error_not_a_crash(tmp_path: Path, pad: int) -> None:
    # yajl2_c dies with SIGSEGV on an integer over 4300 digits (``json.loads`` raises);
    # the run is placed across read boundaries too. In a child, so a crash fails the test.
    path = tmp_path / "p.json"
    path.write_bytes(b'{"rows": [1, "' + b"x" * pad + b'", ' + b"7" * 5000 + b"]}")
    code = (
        "import sys\n"
        "from inbox_poller.archive_reader import read_records\n"
        "from inbox_poller.errors import ArchiveReadError\n"
        "try:\n"
        "    list(read_records(sys.argv[1]))\n"
        "except ArchiveReadError as exc:\n"
        "    print(exc)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "a run of more than 4300 digits" in child.stdout


def test_digit_runs_up_to_the_limit_are_read(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(b'{"rows": [' + b"7" * 4300 + b', "' + b"1" * 4300 + b'"]}')
    [number, text] = read_records(path)
    assert number == int("7" * 4300) and text == "1" * 4300


# ---- verify ------------------------------------------------------------------------------


def _two(tmp_path: Path) -> tuple[Path, list[ManifestLine]]:
    archive_of(tmp_path, {"1": b'{"data": {"item": [{"a": "1"}]}}', "2": b"[1, 2, 3]"})
    return tmp_path, list(ArchiveReader(tmp_path).manifest())


def _kinds(root: Path) -> list[tuple[str, str]]:
    return [(p.kind, p.where) for p in verify(root).problems]


def test_a_sound_archive_verifies(tmp_path: Path) -> None:
    root, entries = _two(tmp_path)
    seen: list[Problem] = []
    report = verify(root, seen.append)
    assert report.ok and seen == []
    assert (report.lines, report.payloads) == (2, 2)
    assert report.bytes == sum(e.bytes for e in entries)


def test_verify_finds_a_flipped_byte(tmp_path: Path) -> None:
    root, [first, _] = _two(tmp_path)
    path = root / first.path
    data = bytearray(path.read_bytes())
    data[5] ^= 0x01
    path.write_bytes(bytes(data))
    assert _kinds(root) == [("sha256", first.path)]


def test_verify_finds_a_missing_file(tmp_path: Path) -> None:
    root, [_, second] = _two(tmp_path)
    (root / second.path).unlink()
    assert _kinds(root) == [("missing", second.path)]


def test_verify_finds_a_stray_file_and_a_partial_one(tmp_path: Path) -> None:
    root, [first, _] = _two(tmp_path)
    stray = Path(first.path).with_name("stat-42_job-3.json").as_posix()
    (root / stray).write_text("[]")
    partial = Path(first.path).with_name(".4.abcdef.part").as_posix()
    (root / partial).write_text("[")
    (root / "notes.txt").write_text("x")
    assert sorted(_kinds(root)) == sorted(
        [("partial", partial), ("stray", "notes.txt"), ("stray", stray)]
    )


def test_verify_finds_a_duplicate_line(tmp_path: Path) -> None:
    root, _ = _two(tmp_path)
    manifest = root / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join([*lines, lines[0]]))
    [problem] = verify(root).problems
    assert (problem.kind, problem.where) == ("duplicate", "manifest.jsonl:3")
    assert "job 1 is also on line 1" in problem.detail


def test_verify_finds_torn_bad_and_mismatched_lines(tmp_path: Path) -> None:
    root, [_, second] = _two(tmp_path)
    manifest = root / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    wrong_size = json.loads(lines[1])
    wrong_size["bytes"] += 1
    manifest.write_bytes(
        lines[0] + b'{"job_id": "7", "pa\n' + b'{"job_id": 8}\n' + json.dumps(wrong_size).encode()
    )
    assert _kinds(root) == [
        ("torn-line", "manifest.jsonl:2"),
        ("bad-line", "manifest.jsonl:3"),
        ("torn-line", "manifest.jsonl:4"),  # the last line has no newline
        ("size", second.path),
    ]


def test_verify_refuses_links_in_the_archive(tmp_path: Path) -> None:
    root, [first, _] = _two(tmp_path)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    path = root / first.path
    (outside / "p.json").write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside / "p.json")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    assert sorted(_kinds(root)) == [("not-a-file", first.path), ("stray", "elsewhere")]


def test_verify_a_missing_archive(tmp_path: Path) -> None:
    assert _kinds(tmp_path / "nothing") == [("no-archive", str(tmp_path / "nothing"))]


# ---- issue 12: formats in the manifest, CSV and XML records ----------------------------

OLD_LINE = {
    "job_id": "1", "stat": "9", "method": "GetNewsletterContactDataSummaryAsync",
    "startdate": None, "enddate": None, "path": "m/2026/11/stat-9_job-1.json", "bytes": 2,
    "sha256": "ab", "records": 0, "top_level": "array", "message_id": None,
    "submitted_at": None, "archived_at": "2026-11-01T00:00:00+00:00", "export_id": 1,
    "source": "https://x/y",
}  # fmt: skip


def test_a_line_written_before_formats_reads_as_json() -> None:
    from inbox_poller.archive_reader import parse_manifest_line

    line = parse_manifest_line(json.dumps(OLD_LINE))
    assert (line.format, line.options, line.requested_format) == ("json", {}, "json")
    newer = parse_manifest_line(
        json.dumps({**OLD_LINE, "format": "csv", "options": {"segment": ["7"]}})
    )
    assert (newer.format, newer.options) == ("csv", {"segment": ["7"]})
    with pytest.raises(ValueError, match="'format' is int"):
        parse_manifest_line(json.dumps({**OLD_LINE, "format": 1}))


def test_csv_and_xml_records_stream_by_extension(tmp_path: Path) -> None:
    from inbox_poller.archive_reader import read_records
    from inbox_poller.errors import ArchiveReadError

    (tmp_path / "a.csv").write_bytes(b"id,name\r\n1,Ann\r\n2,Bo\r\n")
    (tmp_path / "a.xml").write_bytes(b"<r><data><i><id>1</id></i><i><id>2</id></i></data></r>")
    assert list(read_records(tmp_path / "a.csv")) == [
        {"id": "1", "name": "Ann"},
        {"id": "2", "name": "Bo"},
    ]
    assert list(read_records(tmp_path / "a.xml")) == [{"id": "1"}, {"id": "2"}]
    (tmp_path / "bad.csv").write_bytes(b"id,name\r\n1\r\n")
    with pytest.raises(ArchiveReadError, match=r"bad\.csv: CSV row 2 has 1 columns"):
        list(read_records(tmp_path / "bad.csv"))
